/** Zero detection and comparison in 512-byte sectors, with memcmp speed (Buffer.equals). */

export const SECTOR = 512;
const ZEROES = Buffer.alloc(64 * 1024);

/** Whether every byte of `buf` is zero. */
export function isAllZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i += ZEROES.length) {
    const part = buf.subarray(i, i + ZEROES.length);
    if (!part.equals(ZEROES.subarray(0, part.length))) return false;
  }
  return true;
}

/** The offset (a multiple of 512 from the buffer's start) of the first sector that is not all zeroes, or -1. */
export function firstNonZeroSector(buf: Buffer): number {
  if (isAllZero(buf)) return -1;
  for (let i = 0; i < buf.length; i += SECTOR) {
    if (!isAllZero(buf.subarray(i, i + SECTOR))) return i;
  }
  return -1;
}

/** The offset of the first sector where `a` and `b` differ, or -1. */
export function firstDifferentSector(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let i = 0; i < a.length; i += SECTOR) {
    if (!a.subarray(i, i + SECTOR).equals(b.subarray(i, i + SECTOR))) return i;
  }
  return -1;
}

/**
 * QEMU's compare_buffers from byte `from` (a multiple of 512): whether its
 * first sector differs between `a` and `b`, and how long (in whole sectors,
 * or to the end) the run of sectors that all differ, or all match, is.
 */
export function sameSectorsRun(a: Buffer, b: Buffer, from: number): { differ: boolean; length: number } {
  const sector = (at: number): boolean => !a.subarray(at, at + SECTOR).equals(b.subarray(at, at + SECTOR));
  const differ = sector(from);
  if (!differ && a.subarray(from).equals(b.subarray(from))) return { differ, length: a.length - from };
  let at = from + SECTOR;
  while (at < a.length && sector(at) === differ) at += SECTOR;
  return { differ, length: Math.min(at, a.length) - from };
}
