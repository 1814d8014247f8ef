/**
 * The file driver's host I/O: positional reads and writes on a file's
 * descriptor, zeroes written as data, and fallocate (punch hole, zero
 * range, allocate) through the native addon, which is decided once per
 * process here. The driver's requests (driver.ts) and image creation
 * (file-create.ts) are built on these.
 */
import { read, write } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { BlockIoError } from '../../core/errors.js';
import type { FileState } from './driver.js';
import { loadFileNativeOps } from './native/native.js';

/** Decided once per process, so capabilities and operations agree. */
export const native = loadFileNativeOps();
export const ops = native.ops;

/** Largest buffer used when zeroes have to be written as data. */
const ZERO_CHUNK = 1 << 20;
/** fallocate errors meaning "not on this file system" (QEMU's translate_err). */
export const UNSUPPORTED = new Set(['ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'ENODEV', 'ENOTTY']);

export type FallocateMode = 'punchHole' | 'zeroRange' | 'allocate';

export function codeOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * One fallocate call; true if done, false if the file system declined
 * (unsupported, or EINVAL/EBUSY that some file systems return for
 * unaligned ranges), so the caller tries the next way. Other errors throw.
 */
export async function tryFallocate(state: FileState, mode: FallocateMode, offset: number, length: number): Promise<boolean> {
  if (ops === undefined || state.unsupported.has(mode)) return false;
  try {
    await ops[mode](state.handle.fd, offset, length);
    return true;
  } catch (error) {
    const code = codeOf(error);
    if (code !== undefined && UNSUPPORTED.has(code)) state.unsupported.add(mode);
    else if (code !== 'EINVAL' && code !== 'EBUSY') throw error;
    return false;
  }
}

/** Writes zeroes as data, in bounded chunks. */
export async function writeZeroData(handle: FileHandle, offset: number, length: number): Promise<void> {
  const zeroes = Buffer.alloc(Math.min(length, ZERO_CHUNK));
  for (let done = 0; done < length; done += zeroes.length) {
    await writeAll(handle, offset + done, zeroes.subarray(0, Math.min(zeroes.length, length - done)));
  }
}

/**
 * pread on the addon's thread pool (native/io_pool.c), or else through fs's
 * callback API on the handle's descriptor (writeAll does the same for
 * writes): a quarter faster per request than FileHandle.read/write, which
 * matters at queue depth 1 (bench/raw-io.ts).
 */
export function pread(handle: FileHandle, buf: Buffer, at: number, length: number, position: number): Promise<number> {
  if (ops !== undefined) return ops.pread(handle.fd, at === 0 && length === buf.length ? buf : buf.subarray(at, at + length), position);
  return new Promise((resolve, reject) =>
    read(handle.fd, buf, at, length, position, (error, bytes) => (error ? reject(error) : resolve(bytes))),
  );
}

/**
 * pwrite until all of `buf` is written: on the addon's thread pool, which
 * goes on after a short write itself, or else through fs's callback API,
 * where one call nearly always does and a short write goes on from its
 * callback, so that a write costs one promise.
 */
export function writeAll(handle: FileHandle, offset: number, buf: Buffer): Promise<void> {
  if (ops !== undefined) return ops.pwrite(handle.fd, buf, offset);
  return new Promise((resolve, reject) => {
    const from = (done: number): void =>
      write(handle.fd, buf, done, buf.length - done, offset + done, (error, bytesWritten) => {
        if (error) reject(error);
        // A write that makes no progress would loop forever; QEMU reports it as EINVAL.
        else if (bytesWritten === 0) reject(new BlockIoError('EINVAL'));
        else if (done + bytesWritten < buf.length) from(done + bytesWritten);
        else resolve();
      });
    from(0);
  });
}
