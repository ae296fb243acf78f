#!/usr/bin/env -S node --initial-old-space-size=64
// duofs with virtiofsd's command line, for libvirt's <binary path='...'/> and
// scripts written for virtiofsd. Runs the compiled code (`npm run build`).
// CommonJS, so --thread-pool-size sizes the pool before anything starts it (thread-pool.js).
'use strict';
require('./thread-pool.js').sizeThreadPool(process.argv.slice(2));
import('../dist/compat/virtiofsd/main.js').then((m) => m.run(process.argv.slice(2)));
