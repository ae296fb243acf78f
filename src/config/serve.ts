// `duofs serve --config FILE` as a process: the daemon, its control socket,
// SIGHUP (re-read the file), SIGINT/SIGTERM (stop), sd_notify.
import { ConfigDaemon, ensureControlDir } from './daemon.js';
import { ConfigError, loadConfig } from './config.js';
import { startControl } from './control.js';
import { openEngine } from '../server.js';
import { StartupError } from '../listeners.js';
import type { Logger } from '../log.js';
import type { LogLimits } from '../log-limit.js';
import { raiseNofileLimit, setNofileLimit, SysError } from '../sys/index.js';
import type { EngineChoice } from '../io/select.js';
import type { FuseOptions } from '../../protocols/fuse/options.js';
import { ServiceNotifier } from '../systemd/notify.js';

export interface ConfigServeOptions {
  file: string;
  log: Logger;
  logLimits: LogLimits | false;
  ioEngine?: EngineChoice;
  threadPoolSize?: number;
  rlimitNofile?: number;
  sessionMaxOpen?: number;
  ninepMaxMsize: number;
  ninepMaxFids: number;
  fuse: Partial<FuseOptions>;
  /** --control-socket: overrides the file's control-socket */
  controlSocket?: string;
}

export async function serveConfig(o: ConfigServeOptions): Promise<void> {
  const { log } = o;
  // SIGHUP's default action ends the process: until the daemon is up, a
  // reload asked for is remembered and done once it is.
  let earlyHup = false;
  const onEarlyHup = (): void => {
    earlyHup = true;
  };
  process.on('SIGHUP', onEarlyHup);
  const read = () => {
    const c = loadConfig(o.file);
    if (o.controlSocket) c.controlSocket = o.controlSocket;
    return c;
  };
  const cfg = read();
  let nofile: number;
  if (o.rlimitNofile !== undefined) {
    try {
      nofile = setNofileLimit(o.rlimitNofile);
    } catch (e) {
      throw new StartupError(`--rlimit-nofile ${o.rlimitNofile}: cannot set the open-file limit (${e instanceof SysError ? e.code : String(e)})`);
    }
  } else nofile = raiseNofileLimit();
  const engine = await openEngine({ ioEngine: o.ioEngine, threadPoolSize: o.threadPoolSize }, log);
  const notifier = ServiceNotifier.fromEnv(log, { connect: true });
  let daemon: ConfigDaemon;
  try {
    daemon = await ConfigDaemon.start(cfg, {
      log,
      engine,
      nofile,
      sessionMaxOpen: o.sessionMaxOpen,
      ninepMaxMsize: o.ninepMaxMsize,
      ninepMaxFids: o.ninepMaxFids,
      fuse: o.fuse,
      logLimits: o.logLimits,
    });
  } catch (e) {
    await engine.close();
    throw e;
  }
  ensureControlDir(cfg.controlSocket);
  const control = await startControl(cfg.controlSocket, () => daemon.status(), log);

  const reload = (): void => {
    let next;
    try {
      next = read();
    } catch (e) {
      // A file that does not parse or validate changes nothing.
      log.error({ config: o.file, err: e instanceof Error ? e.message : String(e) }, 'SIGHUP: config not reloaded, the running devices stay');
      if (!(e instanceof ConfigError)) log.error({ err: e }, 'SIGHUP: unexpected error');
      return;
    }
    void daemon.reload(next).then(
      (r) => notifier?.status(`serving ${daemon.frontEnds.length} devices (reloaded: +${r.added.length} -${r.removed.length})`),
      (e: unknown) => log.error({ err: e }, 'SIGHUP: reload failed'),
    );
  };
  process.off('SIGHUP', onEarlyHup);
  process.on('SIGHUP', () => {
    log.info({ config: o.file }, 'SIGHUP: re-reading the config');
    reload();
  });
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    notifier?.stopping();
    log.info({ signal }, 'shutting down: closing devices and finishing requests');
    control.close();
    void daemon
      .close()
      .then(() => engine.close())
      .then(() => {
        log.info('duofs stopped');
        process.exit(0);
      });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  const status = `serving ${daemon.frontEnds.length} devices from ${o.file}`;
  log.info({ devices: daemon.frontEnds, controlSocket: cfg.controlSocket }, status);
  notifier?.ready(status);
  if (earlyHup) {
    log.info({ config: o.file }, 'SIGHUP during start-up: re-reading the config');
    reload();
  }
}
