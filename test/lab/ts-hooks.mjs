// Lets plain `node` run the lab's TypeScript without a build, for use by hand:
//   node --import ./test/lab/ts-hooks.mjs test/lab/vm.ts --help
// Transpiles .ts files with @swc/core (already a dev dependency, used by jest)
// and resolves the `./x.js` imports of the sources to `./x.ts`.
import { register } from 'node:module';

register('./ts-loader.mjs', import.meta.url);
