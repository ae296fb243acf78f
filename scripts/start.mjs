#!/usr/bin/env node
// `npm start -- serve ...`: installs npm packages and builds when needed,
// then runs duofs with the given arguments.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ensureBuild, ensureDeps, root } from './ensure-deps.mjs';

ensureDeps();
ensureBuild();
const r = spawnSync(process.execPath, [join(root, 'bin', 'duofs.js'), ...process.argv.slice(2)], { stdio: 'inherit' });
process.exit(r.status ?? 1);
