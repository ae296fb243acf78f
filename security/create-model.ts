import type { Logger } from '../src/log.js';
import { HostTruthModel } from './host-truth.js';
import { MappedFileModel } from './mapped-file.js';
import { MappedXattrModel } from './mapped-xattr.js';
import type { SecurityModel, SecurityModelName } from './model.js';

export function createSecurityModel(name: SecurityModelName, log: Logger): SecurityModel {
  switch (name) {
    case 'passthrough':
    case 'none':
      return new HostTruthModel(name);
    case 'mapped-xattr':
      return new MappedXattrModel(log);
    case 'mapped-file':
      return new MappedFileModel(log);
  }
}
