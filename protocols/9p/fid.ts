// A 9P fid: what one client-chosen number stands for on this connection.
import type { Caller, DirStream, Inode, OpenFile } from '../../src/backend/api.js';

/** Txattrcreate state: the value arrives in Twrites and is set at Tclunk. */
export interface XattrWrite {
  name: Buffer;
  value: Buffer;
  written: number;
  flags: number;
}

export class Fid {
  file: OpenFile | undefined;
  dir: DirStream | undefined;
  /** Txattrwalk result (a value, or the NUL-separated name list) */
  xattrRead: Buffer | undefined;
  xattrWrite: XattrWrite | undefined;

  constructor(
    public inode: Inode,
    readonly cr: Caller,
    /** where this fid was last walked from, for Tremove/Trename (verified before use) */
    public parent: Inode | undefined,
    public name: Buffer | undefined,
  ) {}

  get isOpen(): boolean {
    return this.file !== undefined || this.dir !== undefined || this.xattrRead !== undefined || this.xattrWrite !== undefined;
  }
}
