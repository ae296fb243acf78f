// A minimal 9P2000.L responder on a unix stream socket, for testing the
// stream relay (virtio-serial port + socat in the guest) without a real
// server: answers Tversion, refuses everything else with Rlerror, and
// records every message it received.
import { createServer, type Server, type Socket } from 'node:net';

export interface P9Message {
  type: number;
  tag: number;
  body: Buffer;
}

export const T = { version: 100, attach: 104 } as const;

/** Reads a 9P string (u16 length + bytes) at off. */
export function p9str(b: Buffer, off: number): string {
  return b.subarray(off + 2, off + 2 + b.readUInt16LE(off)).toString('utf8');
}

export class P9Stub {
  readonly messages: P9Message[] = [];
  connections = 0;
  private server: Server;
  private sockets = new Set<Socket>();

  constructor(
    readonly path: string,
    readonly refuseWith = 13 /* EACCES */,
  ) {
    this.server = createServer((s) => this.serve(s));
  }

  listen(): Promise<void> {
    return new Promise((res, rej) => {
      this.server.once('error', rej);
      this.server.listen(this.path, () => res());
    });
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((res) => this.server.close(() => res()));
  }

  private serve(s: Socket): void {
    this.connections++;
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    s.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 7) {
        const size = buf.readUInt32LE(0);
        if (size < 7 || size > 1 << 24) {
          // not 9P: stop reading, keep what we have
          s.destroy();
          return;
        }
        if (buf.length < size) break;
        const m: P9Message = { type: buf[4], tag: buf.readUInt16LE(5), body: Buffer.from(buf.subarray(7, size)) };
        buf = buf.subarray(size);
        this.messages.push(m);
        s.write(this.reply(m));
      }
    });
  }

  private reply(m: P9Message): Buffer {
    if (m.type === T.version) {
      const msize = m.body.readUInt32LE(0);
      const version = Buffer.from(p9str(m.body, 4));
      const out = Buffer.alloc(7 + 4 + 2 + version.length);
      out.writeUInt32LE(out.length, 0);
      out[4] = T.version + 1;
      out.writeUInt16LE(m.tag, 5);
      out.writeUInt32LE(msize, 7);
      out.writeUInt16LE(version.length, 11);
      version.copy(out, 13);
      return out;
    }
    const out = Buffer.alloc(11); // Rlerror
    out.writeUInt32LE(11, 0);
    out[4] = 7;
    out.writeUInt16LE(m.tag, 5);
    out.writeUInt32LE(this.refuseWith, 7);
    return out;
  }
}
