// `duofs bench` without the CLI wiring: the same options and code as the
// `bench` command of bin/duofs.js (src/bench/main.ts), for running it from
// the compiled tree directly:
//   node dist/bench/duofs-bench.js --help
//   node dist/bench/duofs-bench.js --servers duofs-virtiofs,virtiofsd --jobs seq-read --repeat 1
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { benchOptions, runBench } from '../src/bench/main.js';

await benchOptions(yargs(hideBin(process.argv)).scriptName('duofs'))
  .command('$0', 'compare protocol and server throughput on one tree', (y) => y, async (argv) => process.exit(await runBench(argv)))
  .strict()
  .help()
  .alias('h', 'help')
  .version(false)
  .parseAsync();
