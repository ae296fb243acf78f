#!/usr/bin/env node
// duofs with virtiofsd's command line, for libvirt's <binary path='...'/> and
// scripts written for virtiofsd. Runs the compiled code (`npm run build`).
import { run } from '../dist/compat/virtiofsd/main.js';

run(process.argv.slice(2));
