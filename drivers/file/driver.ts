/**
 * file: QEMU's `file` protocol driver (block/file-posix.c). The image is a
 * regular file, or a block device, read and written with positional I/O on
 * the libuv thread pool. Holes (SEEK_DATA/SEEK_HOLE), fast zeroing and
 * discard (fallocate) come from the native addon; without it the driver
 * still works, reporting everything as data and writing zeroes as data.
 */
import { constants, read, write } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import {
  defineBlockDriver,
  type DriverBlockdevCreateContext,
  type DriverCreateContext,
  type DriverLimits,
  type DriverOpenContext,
  type NodeDescription,
} from '../../core/block/driver.js';
import type { BlockStatusExtent, ZeroFlags } from '../../core/block/request.js';
import { BlockIoError, BlockLayerError, systemErrorText, toBlockIoError } from '../../core/errors.js';
import { fileReopen } from './file-reopen.js';
import { loadFileNativeOps } from './native/native.js';
import {
  type FileBlockdevCreateOptions,
  type FileCreateOptions,
  type FileOptions,
  fileBlockdevCreateOptions,
  fileCreateOptions,
  fileOptions,
} from './options.js';

/** Decided once per process, so capabilities and operations agree. */
const native = loadFileNativeOps();
const ops = native.ops;

/** fs reads and writes take at most 2 GiB - 1; stay well below. */
const MAX_TRANSFER = 1 << 30;
/** Largest buffer used when zeroes have to be written as data. */
const ZERO_CHUNK = 1 << 20;
/** fallocate errors meaning "not on this file system" (QEMU's translate_err). */
const UNSUPPORTED = new Set(['ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'ENODEV', 'ENOTTY']);

type FallocateMode = 'punchHole' | 'zeroRange' | 'allocate';
type Prealloc = NonNullable<FileCreateOptions['preallocation']>;

export interface FileState {
  readonly filename: string;
  /** Replaced by a reopen (file-reopen.ts). */
  handle: FileHandle;
  readonly blockDevice: boolean;
  length: number;
  /** fallocate modes the file system refused with ENOTSUP; not tried again (QEMU's has_write_zeroes, has_discard). */
  readonly unsupported: Set<FallocateMode>;
  /** A failed fdatasync: dirty pages may be lost, so every later flush fails too (QEMU's page_cache_inconsistent). */
  flushFailure?: BlockIoError;
}

function codeOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** An error of create or resize, worded as QEMU: `Could not resize file: No space left on device`. */
function ioFailure(what: string, error: unknown): BlockIoError {
  return new BlockIoError(toBlockIoError(error).errno, `${what}: ${systemErrorText(error)}`);
}

/**
 * One fallocate call; true if done, false if the file system declined
 * (unsupported, or EINVAL/EBUSY that some file systems return for
 * unaligned ranges), so the caller tries the next way. Other errors throw.
 */
async function tryFallocate(state: FileState, mode: FallocateMode, offset: number, length: number): Promise<boolean> {
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
async function writeZeroData(handle: FileHandle, offset: number, length: number): Promise<void> {
  const zeroes = Buffer.alloc(Math.min(length, ZERO_CHUNK));
  for (let done = 0; done < length; done += zeroes.length) {
    await writeAll(handle, offset + done, zeroes.subarray(0, Math.min(zeroes.length, length - done)));
  }
}

/**
 * pread/pwrite through fs's callback API on the handle's descriptor: a
 * quarter faster per request than FileHandle.read/write, which matters at
 * queue depth 1 (bench/raw-io.ts).
 */
function pread(handle: FileHandle, buf: Buffer, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    read(handle.fd, buf, at, length, position, (error, bytes) => (error ? reject(error) : resolve(bytes))),
  );
}

function pwrite(handle: FileHandle, buf: Buffer, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    write(handle.fd, buf, at, length, position, (error, bytes) => (error ? reject(error) : resolve(bytes))),
  );
}

/** pwrite until all of `buf` is written: one call nearly always does (no async frame then). */
function writeAll(handle: FileHandle, offset: number, buf: Buffer): Promise<void> {
  return pwrite(handle, buf, 0, buf.length, offset).then((bytesWritten) =>
    bytesWritten === buf.length ? undefined : writeRest(handle, offset, buf, bytesWritten),
  );
}

/** The rest of a short write, after the first pwrite wrote `written` bytes. */
async function writeRest(handle: FileHandle, offset: number, buf: Buffer, written: number): Promise<void> {
  for (let done = 0, bytesWritten = written; ; ) {
    // A write that makes no progress would loop forever; QEMU reports it as EINVAL.
    if (bytesWritten === 0) throw new BlockIoError('EINVAL');
    done += bytesWritten;
    if (done >= buf.length) return;
    bytesWritten = await pwrite(handle, buf, done, buf.length - done, offset + done);
  }
}

/** Grows a file from `from` to `to` with reserved (falloc) or written (full) blocks. */
async function preallocate(handle: FileHandle, from: number, to: number, prealloc: 'falloc' | 'full'): Promise<void> {
  if (prealloc === 'falloc' && ops !== undefined) {
    try {
      await ops.allocate(handle.fd, from, to - from);
      return;
    } catch (error) {
      // Where the file system cannot allocate, posix_fallocate writes zeroes instead.
      if (!UNSUPPORTED.has(codeOf(error) ?? '')) throw ioFailure('Could not preallocate new data', error);
    }
  }
  try {
    await handle.truncate(to);
    await writeZeroData(handle, from, to - from);
    if (prealloc === 'full') await handle.sync();
  } catch (error) {
    throw ioFailure('Could not write zeros for preallocation', error);
  }
}

/**
 * Resizes a regular file the way QEMU's handle_aiocb_truncate does: growth is
 * sparse (off), reserved (falloc) or written (full), a failed preallocation
 * restores the old size, and growing an empty file writes its first block,
 * so images we create map like qemu-img's.
 */
async function resizeRegular(handle: FileHandle, length: number, prealloc: Prealloc): Promise<void> {
  const current = (await handle.stat()).size;
  if (prealloc === 'off' || length <= current) {
    await handle.truncate(length).catch((error: unknown) => {
      throw ioFailure('Could not resize file', error);
    });
  } else {
    await preallocate(handle, current, length, prealloc).catch(async (error: unknown) => {
      await handle.truncate(current).catch(() => undefined);
      throw error;
    });
  }
  if (current === 0 && length > 0 && prealloc !== 'full') {
    // QEMU's allocate_first_block (512 bytes below 4 KiB, else 4 KiB), but never past the new end.
    await writeAll(handle, 0, Buffer.alloc(Math.min(length, length < 4096 ? 512 : 4096))).catch(() => undefined);
  }
}

/** A file maps its bytes one to one: every extent's host offset is its offset. */
function extent(offset: number, length: number, data: boolean): BlockStatusExtent {
  return { offset, length, data, zero: !data, allocated: true, hostOffset: offset };
}

/** Errors of a read-write open that a read-only open may not have (QEMU's auto-read-only fallback). */
const READ_ONLY_FALLBACK = new Set(['EACCES', 'EPERM', 'EROFS']);

/**
 * Opens the file read-write, or read-only for a read-only node (or when
 * read-write is refused and auto-read-only allows it); refuses what is not
 * a regular file or block device.
 */
async function fileOpen(ctx: DriverOpenContext<FileOptions>): Promise<FileState> {
  const { filename } = ctx.options;
  // O_NONBLOCK so that a FIFO is refused below instead of blocking open().
  const mode = (readOnly: boolean) => (readOnly ? constants.O_RDONLY : constants.O_RDWR) | constants.O_NONBLOCK;
  let handle: FileHandle;
  try {
    handle = await open(filename, mode(ctx.readOnly)).catch(async (error: unknown) => {
      if (ctx.readOnly || !ctx.autoReadOnly || !READ_ONLY_FALLBACK.has(codeOf(error) ?? '')) throw error;
      const readOnlyHandle = await open(filename, mode(true));
      ctx.fallBackToReadOnly();
      return readOnlyHandle;
    });
  } catch (error) {
    throw new BlockLayerError(`Could not open '${filename}': ${systemErrorText(error)}`);
  }
  try {
    const stats = await handle.stat();
    const blockDevice = stats.isBlockDevice();
    if (!stats.isFile() && !blockDevice) {
      throw new BlockLayerError(`'file' driver requires '${filename}' to be a regular file`);
    }
    let length = stats.size;
    if (blockDevice) {
      if (native.ops === undefined) {
        throw new BlockLayerError(`Could not open '${filename}': block devices need the native addon (${native.reason})`);
      }
      length = await native.ops.seekEnd(handle.fd);
    }
    return { filename, handle, blockDevice, length, unsupported: new Set() };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Closes the file. */
async function fileClose(state: FileState): Promise<void> {
  await state.handle.close();
}

/** Buffered I/O has no alignment needs; only the transfer size is bounded. */
function fileLimits(): Partial<DriverLimits> {
  return { maxTransfer: MAX_TRANSFER };
}

/** The size at open or after the last truncate. */
function fileGetLength(state: FileState): number {
  return state.length;
}

/** pread until `buf` is full; bytes past the end of the file read as zeroes (it shrank under us). */
async function fileRead(state: FileState, offset: number, buf: Buffer): Promise<void> {
  for (let done = 0; done < buf.length; ) {
    const bytesRead = await pread(state.handle, buf, done, buf.length - done, offset + done);
    if (bytesRead === 0) {
      buf.fill(0, done);
      return;
    }
    done += bytesRead;
  }
}

/** pwrite until all is written. */
function fileWrite(state: FileState, offset: number, buf: Buffer): Promise<void> {
  return writeAll(state.handle, offset, buf);
}

/**
 * Zeroes as QEMU's handle_aiocb_write_zeroes(_unmap): punch a hole if
 * unmapping is allowed, else ZERO_RANGE, else punch and re-allocate (tmpfs
 * has PUNCH_HOLE but no ZERO_RANGE), else write zeroes unless noFallback.
 */
async function fileWriteZeroes(state: FileState, offset: number, length: number, flags: ZeroFlags): Promise<void> {
  if (flags.mayUnmap && (await tryFallocate(state, 'punchHole', offset, length))) return;
  if (await tryFallocate(state, 'zeroRange', offset, length)) return;
  if (
    (await tryFallocate(state, 'punchHole', offset, length)) &&
    (await tryFallocate(state, 'allocate', offset, length))
  ) {
    return;
  }
  if (flags.noFallback) throw new BlockIoError('ENOTSUP');
  await writeZeroData(state.handle, offset, length);
}

/** Punches a hole; does nothing where holes are not supported (discard is advisory). */
async function fileDiscard(state: FileState, offset: number, length: number): Promise<void> {
  await tryFallocate(state, 'punchHole', offset, length);
}

/** fdatasync; after one failure every flush fails with the same error. */
async function fileFlush(state: FileState): Promise<void> {
  if (state.flushFailure !== undefined) throw state.flushFailure;
  try {
    await state.handle.datasync();
  } catch (error) {
    state.flushFailure = toBlockIoError(error);
    throw state.flushFailure;
  }
}

/** ftruncate a regular file; a block device keeps its size ('Cannot resize device files'). */
async function fileTruncate(state: FileState, length: number): Promise<void> {
  if (state.blockDevice) {
    if (length !== state.length) throw new BlockIoError('ENOTSUP', 'Cannot resize device files');
    return;
  }
  await resizeRegular(state.handle, length, 'off');
  state.length = length;
}

/**
 * One extent from SEEK_DATA/SEEK_HOLE, as file-posix's find_allocation:
 * holes and anything past EOF read as zeroes; when the answer is
 * inconsistent (the file changed between the two seeks) or the seek
 * fails, everything is data.
 */
async function fileBlockStatus(state: FileState, offset: number, length: number): Promise<BlockStatusExtent[]> {
  const end = offset + length;
  if (ops === undefined) {
    const eof = (await state.handle.stat()).size;
    if (eof <= offset) return [extent(offset, length, false)];
    return [extent(offset, Math.min(eof, end) - offset, true)];
  }
  try {
    const data = await ops.seekData(state.handle.fd, offset);
    if (data === -1) return [extent(offset, length, false)];
    if (data > offset) return [extent(offset, Math.min(data, end) - offset, false)];
    if (data === offset) {
      const hole = await ops.seekHole(state.handle.fd, offset);
      if (hole === -1) return [extent(offset, length, false)];
      if (hole > offset) return [extent(offset, Math.min(hole, end) - offset, true)];
    }
  } catch {
    // No information: report data, as QEMU does.
  }
  return [extent(offset, length, true)];
}

/** File name, host allocation, and whether the native addon is in use. */
async function fileDescribe(state: FileState): Promise<NodeDescription> {
  const stats = await state.handle.stat();
  return {
    filename: state.filename,
    actualSize: stats.blocks * 512,
    formatSpecific: { type: 'file', data: { 'sparse-ops': ops === undefined ? 'fallback' : 'native' } },
  };
}

/**
 * Creates or truncates the file, then grows it to `size` with `preallocation`
 * (QEMU's raw_co_create): `size` may be negative only from blockdev-create,
 * where QEMU reads it as an unsigned number that ftruncate refuses.
 */
async function createFile(
  filename: string,
  size: number,
  preallocation: FileBlockdevCreateOptions['preallocation'] = 'off',
  nocow = false,
): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(filename, constants.O_RDWR | constants.O_CREAT, 0o644);
  } catch (error) {
    throw new BlockLayerError(`Could not create '${filename}': ${systemErrorText(error)}`);
  }
  try {
    await resizeRegular(handle, 0, 'off');
    // An optimisation only, ignored where unsupported, as in QEMU.
    if (nocow) await ops?.setNoCow(handle.fd).catch(() => undefined);
    if (preallocation === 'metadata') throw new BlockLayerError('Unsupported preallocation mode: metadata');
    if (size < 0) throw new BlockLayerError('Could not resize file: Invalid argument');
    await resizeRegular(handle, size, preallocation);
  } finally {
    await handle.close();
  }
}

/** qemu-img create, drive-backup's target, the raw driver's file. */
async function fileCreate({ options }: DriverCreateContext<FileCreateOptions>): Promise<void> {
  await createFile(options.filename, options.size, options.preallocation, options.nocow);
}

/**
 * QMP blockdev-create with QEMU's BlockdevCreateOptionsFile. The extent size
 * hint is checked as QEMU checks it, and not applied (an XFS optimisation).
 */
async function fileBlockdevCreate(ctx: DriverBlockdevCreateContext<FileBlockdevCreateOptions>): Promise<void> {
  const { filename, size, preallocation, nocow } = ctx.options;
  if ((ctx.options['extent-size-hint'] ?? 0) > 0xffffffff || (ctx.options['extent-size-hint'] ?? 0) < 0) {
    throw new BlockLayerError('Extent size hint is too large');
  }
  await ctx.checkNotOpen(filename);
  await createFile(filename, size, preallocation, nocow);
}

export const fileDriver = defineBlockDriver<FileOptions, FileState, FileCreateOptions, FileBlockdevCreateOptions>({
  name: 'file',
  kind: 'protocol',
  summary: 'a host file or block device',
  options: fileOptions,
  createOptions: fileCreateOptions,
  blockdevCreateOptions: fileBlockdevCreateOptions,
  capabilities: { canZero: ops !== undefined, canDiscard: ops !== undefined, canFua: false, concurrency: 'parallel' },
  open: fileOpen,
  reopen: fileReopen,
  close: fileClose,
  limits: fileLimits,
  getLength: fileGetLength,
  read: fileRead,
  write: fileWrite,
  writeZeroes: fileWriteZeroes,
  discard: fileDiscard,
  flush: fileFlush,
  truncate: fileTruncate,
  blockStatus: fileBlockStatus,
  describe: fileDescribe,
  create: fileCreate,
  blockdevCreate: fileBlockdevCreate,
});
