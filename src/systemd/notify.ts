// Readiness and stop notifications to the service manager (sd_notify(3)),
// for Type=notify units. Exactly one process notifies: the one systemd
// started, so NotifyAccess=main is enough and MAINPID= is never needed.
// Under --sandbox namespace (or with --fuse-mount) that is the supervisor:
// the server, in its own mount namespace, could not reach the socket's
// path, and it says "ready" over the supervisor's channel once every
// front-end listens and it is confined. Otherwise the server itself
// notifies, through a socket connected before it changes its root (chroot)
// and installs seccomp (sendto is on the allow-list already, for --syslog).
import type { Logger } from '../log.js';
import { NotifySocket } from '../sys/notify-socket.js';
import { SysError } from '../sys/errno.js';

export const NOTIFY_ENV = 'NOTIFY_SOCKET';

/** One line: STATUS= ends at a newline. */
const oneLine = (s: string): string => s.replace(/[\r\n]+/g, ' ');

export class ServiceNotifier {
  private stopped = false;

  private constructor(
    private readonly socket: NotifySocket,
    private readonly log: Logger,
  ) {}

  /**
   * The notifier $NOTIFY_SOCKET asks for, or undefined; the variable is
   * removed either way (sd_notify's unset_environment), so no process
   * started from here notifies in our name.
   */
  static fromEnv(log: Logger, o: { connect: boolean }, env: NodeJS.ProcessEnv = process.env): ServiceNotifier | undefined {
    const spec = env[NOTIFY_ENV];
    delete env[NOTIFY_ENV];
    if (!spec) return undefined;
    try {
      return new ServiceNotifier(NotifySocket.open(spec, o), log);
    } catch (e) {
      log.warn({ notifySocket: spec, errno: e instanceof SysError ? e.code : undefined }, `systemd notifications off: ${(e as Error).message}`);
      return undefined;
    }
  }

  /** READY=1 with what is served: `systemctl status` shows the STATUS= line. */
  ready(status: string): void {
    this.send(`READY=1\nSTATUS=${oneLine(status)}`);
  }

  /** STATUS= alone (a reload changed what is served). */
  status(status: string): void {
    this.send(`STATUS=${oneLine(status)}`);
  }

  /** STOPPING=1, once (a second signal changes nothing for systemd). */
  stopping(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.send('STOPPING=1\nSTATUS=stopping: finishing requests');
  }

  private send(text: string): void {
    try {
      this.socket.send(text);
      this.log.debug({ notifySocket: this.socket.spec, message: text.replace(/\n/g, ' ') }, 'notified the service manager');
    } catch (e) {
      this.log.warn(
        { notifySocket: this.socket.spec, errno: e instanceof SysError ? e.code : undefined },
        `systemd notification lost: ${(e as Error).message}`,
      );
    }
  }
}
