// Compile-time check (tsc runs on test/ with everything else): the lab
// harness modules still fit the shapes src/bench/lab-api.ts states for the
// guest bench, which loads them at run time and cannot import them.
import type * as LabMod from '../lab/lab.js';
import type * as GuestMod from '../lab/guest.js';
import type * as DaemonsMod from '../lab/daemons.js';
import type { LabDaemonsModule, LabGuestModule, LabModule } from '../../src/bench/lab-api.js';

/** Resolves only when U can be used where T is expected. */
type Fits<T, U extends T> = U;

export type LabHarnessFits = [Fits<LabModule, typeof LabMod>, Fits<LabGuestModule, typeof GuestMod>, Fits<LabDaemonsModule, typeof DaemonsMod>];
