// Buffers over memory whose host address is known (mmapped guest memory):
// vectored syscalls build iovecs from them without copying. A mapping
// registers each ArrayBuffer it hands out; any other Buffer has no address
// here and is moved through ordinary pread/pwrite.

const windowBase = new WeakMap<ArrayBuffer, number>();

/** Records that `ab` starts at host address `base` (its memory must stay mapped while views exist). */
export function registerWindow(ab: ArrayBuffer, base: number): void {
  windowBase.set(ab, base);
}

/** The host address of the first byte of `buf`, or undefined for a Buffer of no registered window. */
export function hostAddressOf(buf: Buffer): number | undefined {
  const base = windowBase.get(buf.buffer as ArrayBuffer);
  return base === undefined ? undefined : base + buf.byteOffset;
}
