/**
 * Loads the file driver's native addon (sparse_ops.c and io_pool.c, built
 * by build.mjs). pread and pwrite run on the addon's own thread pool, the
 * others on libuv's. Rejections carry `code` (errno name: 'ENOTSUP', 'EIO'
 * …), a negative `errno` and `syscall`, as Node's fs errors do.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface FileNativeOps {
  /** One pread into all of `buf`: the bytes read, fewer only at the end of the file. */
  pread(fd: number, buf: Buffer, position: number): Promise<number>;
  /** pwrite until all of `buf` is written (a write that makes no progress fails with EINVAL). */
  pwrite(fd: number, buf: Buffer, position: number): Promise<void>;
  /** lseek SEEK_DATA: the first data offset at or after `offset`, or -1 if none before EOF (ENXIO). */
  seekData(fd: number, offset: number): Promise<number>;
  /** lseek SEEK_HOLE: the first hole at or after `offset` (EOF counts as one), or -1 beyond EOF (ENXIO). */
  seekHole(fd: number, offset: number): Promise<number>;
  /** lseek SEEK_END: the size of a file or block device. */
  seekEnd(fd: number): Promise<number>;
  /** fallocate PUNCH_HOLE|KEEP_SIZE: deallocates; the range reads as zeroes. */
  punchHole(fd: number, offset: number, length: number): Promise<void>;
  /** fallocate ZERO_RANGE: the range reads as zeroes and stays allocated. */
  zeroRange(fd: number, offset: number, length: number): Promise<void>;
  /** fallocate mode 0: allocates (unwritten extents); may extend the file. */
  allocate(fd: number, offset: number, length: number): Promise<void>;
  /** copy_file_range: resolves the bytes copied, which may be fewer than `length`. */
  copyFileRange(fdIn: number, offIn: number, fdOut: number, offOut: number, length: number): Promise<number>;
  /** Sets FS_NOCOW_FL (btrfs); rejects where the file system has no such flag. */
  setNoCow(fd: number): Promise<void>;
  /** An open file description read lock on one byte (F_OFD_SETLK, never waits); throws EAGAIN if it is write-locked. */
  lockByte(fd: number, byte: number): void;
  /** Releases this description's lock on one byte. */
  unlockByte(fd: number, byte: number): void;
  /** Whether another open file description holds a lock on the byte (F_OFD_GETLK). */
  lockByteHeld(fd: number, byte: number): boolean;
}

export type FileNativeLoad = { ops: FileNativeOps } | { ops: undefined; reason: string };

const ADDON = join('drivers', 'file', 'native', 'build', 'Release', 'sparse_ops.node');

/**
 * Where the built addon is: the build lives in the source tree, so from the
 * compiled copy under build/ (which has a package.json of its own) the
 * search goes on upwards until a directory holds it.
 */
function addonPath(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, ADDON))) return join(dir, ADDON);
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** The addon, or why the portable fallback is used. Reads BLOCKLAYER_NO_NATIVE at each call. */
export function loadFileNativeOps(): FileNativeLoad {
  if (process.env.BLOCKLAYER_NO_NATIVE === '1') return { ops: undefined, reason: 'disabled by BLOCKLAYER_NO_NATIVE=1' };
  const path = addonPath();
  if (path === undefined) return { ops: undefined, reason: `${ADDON} is not built (run node drivers/file/native/build.mjs)` };
  try {
    return { ops: createRequire(import.meta.url)(path) as FileNativeOps };
  } catch (error) {
    return { ops: undefined, reason: `cannot load ${path}: ${error instanceof Error ? error.message : String(error)}` };
  }
}
