#!/usr/bin/env -S node --initial-old-space-size=64
// The duofs command. Runs the compiled CLI (`npm run build` or `npm start` builds it).
// CommonJS, so the thread pool is sized before anything starts it (thread-pool.js).
'use strict';
require('./thread-pool.js').sizeThreadPool(process.argv.slice(2));
import('../dist/src/cli.js');
