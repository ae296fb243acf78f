// What the guest bench needs from the lab harness (test/lab/lab.ts,
// guest.ts, daemons.ts). The harness is loaded at run time from a checkout
// (importLabModule: it finds the lab root and the guest scripts next to its
// own source), so product code states the shapes it uses here and imports
// nothing from test/. test/bench/lab-api.types.ts fails to compile when the
// harness stops fitting them.
import type { ChildProcess } from 'node:child_process';

/** One file system the guest mounts at /mnt/<name> (the kinds the bench uses). */
export type LabMountSpec =
  | { kind: 'qemu-9p'; name: string; dir: string; securityModel?: 'passthrough' | 'mapped-xattr' | 'mapped-file' | 'none'; msize?: number }
  | { kind: 'virtiofsd'; name: string; dir: string; args?: string[] }
  | { kind: 'vhost-user-fs'; name: string; socket: string; tag?: string }
  | { kind: 'vhost-user-9p'; name: string; socket: string; tag?: string; msize?: number }
  | { kind: '9p-stream'; name: string; socket: string; msize?: number }
  | { kind: 'diod'; name: string; dir: string; msize?: number };

export interface LabGuestOptions {
  label?: string;
  mounts: LabMountSpec[];
  /** script under test/lab/guest/scenarios/ */
  scenario?: string;
  /** mount names the scenario runs on, one after the other */
  scenarioOn?: string[];
  timeoutMs: number;
  memoryMiB?: number;
  cpus?: number;
  workDir?: string;
  keepWorkDir?: boolean;
  allowMountFailure?: boolean;
  onConsole?: (text: string) => void;
}

export interface LabGuestRun {
  /** mount name -> what the guest printed about the failure */
  mountFailures: Record<string, string>;
  /** the scenario's output per mount, with its exit status */
  sections: { mount: string; rc: number; output: string }[];
}

/** test/lab/guest.ts */
export interface LabGuestModule {
  runGuest: (opts: LabGuestOptions) => Promise<LabGuestRun>;
}

export interface LabDaemon {
  readonly process: ChildProcess;
  /** everything it printed so far */
  output(): string;
  /** SIGTERM, then SIGKILL; safe to call twice */
  stop(): Promise<void>;
}

/** test/lab/daemons.ts */
export interface LabDaemonsModule {
  startHostDaemon: (o: { name: string; command: string; args: string[]; waitFor: string[] }) => Promise<LabDaemon>;
}

/** test/lab/lab.ts */
export interface LabModule {
  makeWorkDir: (label: string) => string;
  removeWorkDir: (dir: string) => void;
  tail: (text: string, n?: number) => string;
  exited: (p: ChildProcess) => Promise<void>;
}
