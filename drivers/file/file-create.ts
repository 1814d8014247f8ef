/**
 * Creating and resizing host files (QEMU's raw_co_create and
 * handle_aiocb_truncate in file-posix.c): qemu-img create and QMP
 * blockdev-create for the file driver, with the preallocation modes, and
 * the resize the driver's truncate uses.
 */
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { type DriverBlockdevCreateContext, type DriverCreateContext, isPreallocMode } from '../../core/block/driver.js';
import { BlockIoError, BlockLayerError, systemErrorText, toBlockIoError } from '../../core/errors.js';
import type { NodePermissions } from '../../core/block/permissions.js';
import { codeOf, ops, UNSUPPORTED, writeAll, writeZeroData } from './file-io.js';
import { applyImageLocks } from './image-lock.js';
import type { FileBlockdevCreateOptions, FileCreateOptions } from './options.js';

/** How a resize allocates what it adds (QEMU's PreallocMode without metadata, which only formats have). */
type Prealloc = 'off' | 'falloc' | 'full';

/** An error of create or resize, worded as QEMU: `Could not resize file: No space left on device`. */
function ioFailure(what: string, error: unknown): BlockIoError {
  return new BlockIoError(toBlockIoError(error).errno, `${what}: ${systemErrorText(error)}`);
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
 * so images we create map like qemu-img's. `known` is the current size when
 * the caller knows it (an open node does), which saves asking the file
 * system: growing image files do this often, behind queued I/O.
 */
export async function resizeRegular(handle: FileHandle, length: number, prealloc: Prealloc, known?: number): Promise<void> {
  const current = known ?? (await handle.stat()).size;
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

/** What QEMU's raw_co_create takes while it creates: write and resize, sharing all but resize. */
const CREATING: NodePermissions = { taken: ['write', 'resize'], shared: ['consistent read', 'write', 'write unchanged'] };

/**
 * Creates or truncates the file, then grows it to `size` with `preallocation`
 * (QEMU's raw_co_create): `size` may be negative only from blockdev-create,
 * where QEMU reads it as an unsigned number that ftruncate refuses. The file
 * is locked as QEMU locks it meanwhile (where the native addon is), and not
 * emptied when another process uses it.
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
    // QEMU's raw_co_create locks first: an image another process uses is not emptied under it.
    if (ops !== undefined) applyImageLocks(ops, handle.fd, new Set(), CREATING, filename);
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

/** QEMU's check of the extent size hint, which it stores in 32 bits; the hint itself is an XFS optimisation, not applied. */
function checkExtentSizeHint(hint: number | undefined): void {
  if ((hint ?? 0) > 0xffffffff || (hint ?? 0) < 0) throw new BlockLayerError('Extent size hint is too large');
}

/** qemu-img create, drive-backup's target, the raw driver's file. */
export async function fileCreate({ options }: DriverCreateContext<FileCreateOptions>): Promise<void> {
  const preallocation = options.preallocation ?? 'off';
  // qemu-img's -o preallocation is a string to the file driver (qapi_enum_parse's message).
  if (!isPreallocMode(preallocation)) throw new BlockLayerError(`invalid parameter value: ${preallocation}`);
  checkExtentSizeHint(options.extent_size_hint);
  await createFile(options.filename, options.size, preallocation, options.nocow);
}

/** QMP blockdev-create with QEMU's BlockdevCreateOptionsFile. */
export async function fileBlockdevCreate(ctx: DriverBlockdevCreateContext<FileBlockdevCreateOptions>): Promise<void> {
  const { filename, size, preallocation, nocow } = ctx.options;
  checkExtentSizeHint(ctx.options['extent-size-hint']);
  await ctx.checkNotOpen(filename);
  await createFile(filename, size, preallocation, nocow);
}
