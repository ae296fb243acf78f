// passthrough and none: the host inode is the guest's view; no metadata.
import type { Location, SecurityModel, SecurityModelName } from './model.js';
import type { GuestMeta } from './formats/mapped-file.js';

export class HostTruthModel implements SecurityModel {
  readonly tracksLocation = false;
  readonly mapsFileTypes = false;
  readonly callerCredentials: boolean;

  constructor(readonly name: Extract<SecurityModelName, 'passthrough' | 'none'>) {
    this.callerCredentials = name === 'passthrough';
  }

  readMeta(): GuestMeta {
    return {};
  }

  writeMeta(): void {}

  isReservedName(): boolean {
    return false;
  }

  hostXattrName(name: Buffer): Buffer {
    return name;
  }

  guestXattrName(name: Buffer): Buffer {
    return name;
  }

  linked(_from: Location, _to: Location): void {}
  renamed(_from: Location, _to: Location, _exchange: boolean): void {}
  removed(): void {}
}
