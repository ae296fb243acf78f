// Backend results in tests on a local filesystem, where every call answers at once.
import type { Awaitable } from '../../src/backend/api.js';

export function now<T>(v: Awaitable<T>): T {
  if (v instanceof Promise) throw new Error('the backend was expected to answer at once (a local filesystem)');
  return v;
}
