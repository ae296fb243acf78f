import type { Logger } from '../src/log.js';
import { NoneModel, PassthroughModel } from './host-truth.js';
import { MappedFileModel } from './mapped-file.js';
import { MappedXattrModel } from './mapped-xattr.js';
import type { ModelServices, SecurityModel, SecurityModelName } from './model.js';

export function createSecurityModel(name: SecurityModelName, svc: ModelServices, log: Logger): SecurityModel {
  switch (name) {
    case 'passthrough':
      return new PassthroughModel(svc);
    case 'none':
      return new NoneModel(svc);
    case 'mapped-xattr':
      return new MappedXattrModel(svc, log);
    case 'mapped-file':
      return new MappedFileModel(svc, log);
  }
}
