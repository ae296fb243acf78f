// Metadata the model cannot use (truncated, oversized, non-numeric, of the
// wrong type, a symlink where a file should be): the host's values show,
// as in QEMU, and each object is reported once, with what was wrong.
import type { ModelInode } from './model.js';
import type { Logger } from '../src/log.js';

const MAX_REMEMBERED = 10_000;

export class BadMetadataLog {
  private readonly seen = new Set<string>();

  constructor(
    private readonly log: Logger,
    private readonly model: string,
  ) {}

  report(inode: ModelInode, problem: string, where?: string): void {
    const key = `${inode.dev}:${inode.ino}:${problem}`;
    if (this.seen.has(key)) return;
    if (this.seen.size >= MAX_REMEMBERED) this.seen.clear();
    this.seen.add(key);
    this.log.warn(
      { model: this.model, inode: inode.guestIno.toString(), path: where, problem },
      'unusable security-model metadata; using the host values',
    );
  }
}
