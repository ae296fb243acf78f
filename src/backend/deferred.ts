// A Backend whose every awaitable call answers on a later turn of the event
// loop, in a shuffled order: how the protocols are tested against a backend
// that waits on storage (DUOFS_TEST_DEFERRED_BACKEND=1 runs the protocol
// suites this way; =Nms delays every result N ms). Each call runs at once on the real backend; only its
// result, or its error, arrives later, so every continuation a protocol
// writes after a wait is exercised, with other requests and clunks, forgets
// and releases running in between.
import type { Backend } from './api.js';

/** The methods the API lets complete later (Awaitable results). */
const AWAITABLE = new Set<string>([
  'lookup',
  'getattr',
  'getattrOpen',
  'setattr',
  'readlink',
  'statfs',
  'syncfs',
  'access',
  'open',
  'opendir',
  'readdir',
  'create',
  'tmpfile',
  'mkdir',
  'mknod',
  'symlink',
  'link',
  'unlink',
  'rename',
  'getxattr',
  'listxattr',
  'setxattr',
  'removexattr',
]);

/**
 * Resolves after 1 to 3 turns, so results come back in another order than
 * their calls, or after `delayMs` (a test that needs the next request to
 * arrive first).
 */
function later<T>(settle: () => T, delayMs: number | undefined): Promise<T> {
  let turns = 1 + Math.floor(Math.random() * 3);
  return new Promise<T>((resolve, reject) => {
    if (delayMs !== undefined) {
      setTimeout(() => {
        try {
          resolve(settle());
        } catch (e) {
          reject(e);
        }
      }, delayMs);
      return;
    }
    const tick = (): void => {
      if (--turns > 0) {
        setImmediate(tick);
        return;
      }
      try {
        resolve(settle());
      } catch (e) {
        reject(e);
      }
    };
    setImmediate(tick);
  });
}

export function deferredBackend(inner: Backend, delayMs?: number): Backend {
  return new Proxy(inner, {
    get(target, prop, receiver) {
      const v: unknown = Reflect.get(target, prop, receiver);
      if (typeof prop !== 'string' || !AWAITABLE.has(prop) || typeof v !== 'function') {
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      }
      return (...args: unknown[]): Promise<unknown> => {
        let result: unknown;
        let error: unknown;
        let threw = false;
        try {
          result = (v as (...a: unknown[]) => unknown).apply(target, args);
        } catch (e) {
          threw = true;
          error = e;
        }
        return later(() => {
          if (threw) throw error;
          return result;
        }, delayMs);
      };
    },
  });
}
