#!/usr/bin/env node
// The duofs command. Runs the compiled CLI (`npm run build` or `npm start` builds it).
import '../dist/src/cli.js';
