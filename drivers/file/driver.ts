/**
 * file: QEMU's `file` protocol driver (block/file-posix.c). The image is a
 * regular file, or a block device, read and written with positional I/O on
 * the native addon's thread pool. Holes (SEEK_DATA/SEEK_HOLE), fast zeroing
 * and discard (fallocate) come from the addon too; without it the driver
 * still works, on Node's thread pool, reporting everything as data and
 * writing zeroes as data.
 * This file holds the node state and the driver's requests; the host I/O
 * under them is file-io.ts, creating and resizing files file-create.ts,
 * reopening file-reopen.ts.
 */
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import {
  defineBlockDriver,
  type DriverLimits,
  type DriverOpenContext,
  type NodeDescription,
  type PreallocMode,
} from '../../core/block/driver.js';
import type { NodePermissions } from '../../core/block/permissions.js';
import type { BlockStatusExtent, ZeroFlags } from '../../core/block/request.js';
import { BlockIoError, BlockLayerError, systemErrorText, toBlockIoError } from '../../core/errors.js';
import { fileCopyRangeFrom, fileCopyRangeTo } from './file-copy-range.js';
import { fileBlockdevCreate, fileCreate, resizeRegular } from './file-create.js';
import { codeOf, type FallocateMode, native, ops, pread, tryFallocate, writeAll, writeZeroData } from './file-io.js';
import { fileReopen } from './file-reopen.js';
import { applyImageLocks } from './image-lock.js';
import {
  type FileBlockdevCreateOptions,
  type FileCreateOptions,
  type FileOptions,
  fileBlockdevCreateOptions,
  fileCreateOptions,
  fileOptions,
} from './options.js';

/** fs reads and writes take at most 2 GiB - 1; stay well below. */
const MAX_TRANSFER = 1 << 30;

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
  /** Discards that reached the file, as QEMU's raw_account_discard counts them (query-blockstats' driver-specific). */
  readonly discards: { ok: number; failed: number; bytesOk: number };
  /** The image is locked (image-lock.ts): `locking` is on, or auto with the native addon. */
  readonly locking: boolean;
  /** The lock bytes held on the descriptor. */
  lockBytes: Set<number>;
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
  const { filename, locking } = ctx.options;
  if (filename === '') throw new BlockLayerError("The 'file' block driver requires a file name");
  if (locking === 'on' && native.ops === undefined) throw new BlockLayerError(`locking=on: image locks need the native addon (${native.reason})`);
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
    return {
      filename,
      handle,
      blockDevice,
      length,
      unsupported: new Set(),
      discards: { ok: 0, failed: 0, bytesOk: 0 },
      locking: locking !== 'off' && native.ops !== undefined,
      lockBytes: new Set(),
    };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Closes the file (which gives its locks up). */
async function fileClose(state: FileState): Promise<void> {
  await state.handle.close();
}

/** Locks the image for what its users need now (image-lock.ts). */
function fileSetPermissions(state: FileState, permissions: NodePermissions): void {
  if (!state.locking) return;
  state.lockBytes = applyImageLocks(native.ops!, state.handle.fd, state.lockBytes, permissions, state.filename);
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

/**
 * Punches a hole; does nothing where holes are not supported (discard is
 * advisory), but counts it as failed there, as QEMU counts its ENOTSUP.
 */
async function fileDiscard(state: FileState, offset: number, length: number): Promise<void> {
  let punched = false;
  try {
    punched = await tryFallocate(state, 'punchHole', offset, length);
  } finally {
    if (punched) {
      state.discards.ok++;
      state.discards.bytesOk += length;
    } else {
      state.discards.failed++;
    }
  }
}

/** QEMU's BlockStatsSpecificFile. */
function fileSpecificStats(state: FileState): { driver: string } & Record<string, unknown> {
  const { ok, failed, bytesOk } = state.discards;
  return { driver: 'file', 'discard-nb-ok': ok, 'discard-nb-failed': failed, 'discard-bytes-ok': bytesOk };
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

/**
 * ftruncate a regular file, growing it as `preallocation` says; a block
 * device keeps its size ('Cannot resize device files'). QEMU's messages.
 */
async function fileTruncate(state: FileState, length: number, preallocation: PreallocMode): Promise<void> {
  if (state.blockDevice) {
    if (preallocation !== 'off') {
      throw new BlockIoError('ENOTSUP', `Preallocation mode '${preallocation}' unsupported for this non-regular file`);
    }
    if (length !== state.length) throw new BlockIoError('ENOTSUP', 'Cannot resize device files');
    return;
  }
  if (preallocation === 'metadata') throw new BlockIoError('ENOTSUP', 'Unsupported preallocation mode: metadata');
  await resizeRegular(state.handle, length, preallocation, state.length);
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

export const fileDriver = defineBlockDriver<FileOptions, FileState, FileCreateOptions, FileBlockdevCreateOptions>({
  name: 'file',
  kind: 'protocol',
  summary: 'a host file or block device',
  options: fileOptions,
  createOptions: fileCreateOptions,
  blockdevCreateOptions: fileBlockdevCreateOptions,
  capabilities: {
    canZero: ops !== undefined,
    canDiscard: ops !== undefined,
    canFua: false,
    concurrency: 'parallel',
    growsZeroed: true,
    preallocation: ['metadata', 'falloc', 'full'],
  },
  open: fileOpen,
  reopen: fileReopen,
  setPermissions: fileSetPermissions,
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
  copyRangeFrom: fileCopyRangeFrom,
  copyRangeTo: fileCopyRangeTo,
  describe: fileDescribe,
  specificStats: fileSpecificStats,
  create: fileCreate,
  blockdevCreate: fileBlockdevCreate,
});
