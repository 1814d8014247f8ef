/** Arithmetic for request alignment (powers of two). */

export function alignDown(value: number, alignment: number): number {
  return value - (value % alignment);
}

export function alignUp(value: number, alignment: number): number {
  const rest = value % alignment;
  return rest === 0 ? value : value + alignment - rest;
}

export function isAligned(offset: number, bytes: number, alignment: number): boolean {
  return offset % alignment === 0 && bytes % alignment === 0;
}

/**
 * The aligned range that covers `[offset, offset + bytes)`, clipped at
 * `length`: an image whose size is not a multiple of the alignment ends in a
 * short block, which the driver must accept.
 */
export function coveringRange(
  offset: number,
  bytes: number,
  alignment: number,
  length: number,
): { offset: number; bytes: number } {
  const start = alignDown(offset, alignment);
  const end = Math.min(alignUp(offset + bytes, alignment), Math.max(length, offset + bytes));
  return { offset: start, bytes: end - start };
}

/** Splits `[offset, offset + bytes)` into pieces of at most `max` bytes, each a multiple of `alignment` but the last. */
export function* chunks(offset: number, bytes: number, max: number, alignment: number): Generator<[number, number]> {
  const step = Math.max(alignDown(max, alignment), alignment);
  for (let done = 0; done < bytes; done += step) {
    yield [offset + done, Math.min(step, bytes - done)];
  }
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** True if every byte of `buf` is zero. */
export function isZeroBuffer(buf: Buffer): boolean {
  const words = Math.floor(buf.length / 8);
  const view = new BigUint64Array(buf.buffer, buf.byteOffset, buf.byteOffset % 8 === 0 ? words : 0);
  for (let i = 0; i < view.length; i++) if (view[i] !== 0n) return false;
  for (let i = view.length * 8; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}
