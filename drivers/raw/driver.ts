/**
 * raw: the image is the bytes of its `file` child, optionally a window
 * `[offset, offset + size)` of it (QEMU's raw-format.c). Every operation
 * shifts the offset and forwards to the child.
 */
import { defineBlockDriver, type DriverCreateContext, type DriverMeasureContext, type DriverOpenContext, type MeasureResult, type PreallocMode } from '../../core/block/driver.js';
import type { CopyRange } from '../../core/block/copy-range.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import type { BlockStatusExtent, WriteFlags, ZeroFlags } from '../../core/block/request.js';
import { BlockIoError, BlockLayerError } from '../../core/errors.js';
import { type RawCreateOptions, rawCreateOptions, type RawOptions, rawOptions } from './options.js';

interface RawState {
  file: NodeChild;
  offset: number;
  /** Fixed size, or undefined to follow the file. */
  size: number | undefined;
}

/** Checks the window against the file, with QEMU's messages. */
async function rawOpen({ options, children }: DriverOpenContext<RawOptions>): Promise<RawState> {
  const file = children.get('file')!;
  const offset = options.offset ?? 0;
  const { size } = options;
  if (offset > file.length) {
    throw new BlockLayerError(`Offset (${offset}) cannot be greater than size of the containing file (${file.length})`);
  }
  if (size !== undefined && offset + size > file.length) {
    throw new BlockLayerError(
      `The sum of offset (${offset}) and size (${size}) has to be smaller or equal to the  actual size of the containing file (${file.length})`,
    );
  }
  // A size that is not a whole number of sectors would be rounded up by QEMU's getlength.
  if (size !== undefined && size % 512 !== 0) throw new BlockLayerError('Specified size is not multiple of 512');
  return { file, offset, size };
}

/** The window's size, or what remains of the file after the offset. */
function rawGetLength(state: RawState): number {
  return state.size ?? Math.max(0, state.file.length - state.offset);
}

/** Request geometry is the file's. */
function rawLimits(state: RawState): { requestAlignment: number; maxTransfer: number } {
  const { requestAlignment, maxTransfer } = state.file.node.limits;
  return { requestAlignment, maxTransfer };
}

async function rawRead(state: RawState, offset: number, buf: Buffer): Promise<void> {
  await state.file.read(state.offset + offset, buf);
}

async function rawWrite(state: RawState, offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
  await state.file.write(state.offset + offset, buf, flags);
}

async function rawWriteZeroes(state: RawState, offset: number, length: number, flags: ZeroFlags): Promise<void> {
  await state.file.writeZeroes(state.offset + offset, length, flags);
}

async function rawDiscard(state: RawState, offset: number, length: number): Promise<void> {
  await state.file.discard(state.offset + offset, length);
}

/** Resizes the file, which preallocates as asked; a fixed-size window cannot be resized (QEMU: ENOTSUP). */
async function rawTruncate(state: RawState, length: number, preallocation: PreallocMode): Promise<void> {
  if (state.size !== undefined) throw new BlockIoError('ENOTSUP', 'Cannot resize fixed-size raw disks');
  await state.file.truncate(state.offset + length, preallocation);
}

/** The file's status, shifted back into the window. */
async function rawBlockStatus(state: RawState, offset: number, length: number): Promise<BlockStatusExtent[]> {
  const extents = await state.file.blockStatus(state.offset + offset, length);
  return extents.map((e) => ({ ...e, offset: e.offset - state.offset, allocated: true }));
}

/** Copy offloading passes through with the window's offset, either way (raw_co_copy_range_from/_to). */
function rawCopyRangeFrom(state: RawState, range: CopyRange): Promise<void> {
  return state.file.copyRangeFrom(state.offset + range.from.offset, range);
}

function rawCopyRangeTo(state: RawState, range: CopyRange): Promise<void> {
  return state.file.copyRangeTo(state.offset + range.to.offset, range);
}

/** Creates the file (qemu-img create -f raw). */
async function rawCreate({ options, createWith }: DriverCreateContext<RawCreateOptions>): Promise<void> {
  await createWith('file', { ...options });
}

/** qemu-img measure -O raw (raw_measure): every byte of the virtual size, allocated or not, in whole sectors. */
async function rawMeasure({ options, source }: DriverMeasureContext<RawCreateOptions>): Promise<MeasureResult> {
  const required = source?.length ?? Math.ceil(options.size / 512) * 512;
  return { required, fullyAllocated: required };
}

export const rawDriver = defineBlockDriver<RawOptions, RawState, RawCreateOptions>({
  name: 'raw',
  kind: 'format',
  summary: 'raw image: the bytes of the file child, optionally a window of it',
  options: rawOptions,
  children: [{ name: 'file', required: true, passesPermissions: true }],
  capabilities: { canZero: true, canDiscard: true, canFua: true, concurrency: 'parallel', preallocation: ['metadata', 'falloc', 'full'] },
  createOptions: rawCreateOptions,
  open: rawOpen,
  getLength: rawGetLength,
  limits: rawLimits,
  read: rawRead,
  write: rawWrite,
  writeZeroes: rawWriteZeroes,
  discard: rawDiscard,
  truncate: rawTruncate,
  blockStatus: rawBlockStatus,
  copyRangeFrom: rawCopyRangeFrom,
  copyRangeTo: rawCopyRangeTo,
  create: rawCreate,
  measure: rawMeasure,
});
