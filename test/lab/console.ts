// Parses what a lab guest printed on its serial console. The guest's init
// (test/lab/guest/init.sh) prints marker lines:
//   @@DUOFS-LAB BOOTED uptime=<s>@@
//   @@DUOFS-LAB MOUNTED <name>@@  |  @@DUOFS-LAB MOUNT-FAILED <name>@@
//   @@DUOFS-LAB BEGIN <name>@@ ... scenario output ... @@DUOFS-LAB END <name> rc=<n> secs=<s>@@
//   @@DUOFS-LAB DONE@@
// and scenarios print `CHECK <name> <result>` lines (and anything else) in between.
// Kernel messages may interleave with these on the console; markers are found
// anywhere in a line, and lines are never trusted to be complete.

export interface Section {
  mount: string;
  /** Exit status of the scenario (124: killed by the guest-side timeout; -1: no END line). */
  rc: number;
  /** Guest seconds the scenario took on this mount. */
  guestSeconds: number;
  /** CHECK results by name, in order of first appearance. */
  checks: Map<string, string>;
  /** Names printed more than once (a defect of the scenario or a garbled console). */
  duplicates: string[];
  /** The section's raw output. */
  output: string;
}

export interface ParsedConsole {
  booted: boolean;
  /** Guest uptime when init started (seconds). */
  bootUptime: number | undefined;
  mounted: string[];
  /** Mount name -> what the guest printed about the failure. */
  mountFailures: Record<string, string>;
  sections: Section[];
  done: boolean;
}

const MARK = /@@DUOFS-LAB ([A-Z-]+)(?: ([^@]*))?@@/;
const CHECK = /^CHECK (\S+) (.*?)\s*$/;

export function parseConsole(text: string): ParsedConsole {
  const out: ParsedConsole = { booted: false, bootUptime: undefined, mounted: [], mountFailures: {}, sections: [], done: false };
  let cur: Section | undefined;
  let pending: string[] = []; // lines since the last marker (mount error text)
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r/g, '');
    const m = MARK.exec(line);
    if (!m) {
      if (cur) {
        cur.output += line + '\n';
        const c = CHECK.exec(line);
        if (c) {
          if (cur.checks.has(c[1])) cur.duplicates.push(c[1]);
          else cur.checks.set(c[1], c[2]);
        }
      } else {
        pending.push(line);
        if (pending.length > 40) pending.shift();
      }
      continue;
    }
    const [, kind, arg = ''] = m;
    const args = arg.trim().split(/\s+/);
    switch (kind) {
      case 'BOOTED':
        out.booted = true;
        out.bootUptime = Number(/uptime=([\d.]+)/.exec(arg)?.[1]);
        break;
      case 'MOUNTED':
        out.mounted.push(args[0]);
        break;
      case 'MOUNT-FAILED':
        out.mountFailures[args[0]] = pending.join('\n').trim();
        break;
      case 'BEGIN':
        cur = { mount: args[0], rc: -1, guestSeconds: NaN, checks: new Map(), duplicates: [], output: '' };
        out.sections.push(cur);
        break;
      case 'END':
        if (cur && cur.mount === args[0]) {
          cur.rc = Number(/rc=(-?\d+)/.exec(arg)?.[1] ?? -1);
          cur.guestSeconds = Number(/secs=([\d.]+)/.exec(arg)?.[1]);
        }
        cur = undefined;
        break;
      case 'DONE':
        out.done = true;
        break;
    }
    pending = [];
  }
  return out;
}
