/**
 * memory: a sparse disk in RAM (like nbdkit's memory plugin), for embedding
 * applications and tests. Contents live as long as the node.
 */
import { defineBlockDriver } from '../../core/block/driver.js';
import type { BlockStatusExtent } from '../../core/block/request.js';
import { type MemoryOptions, memoryOptions } from './options.js';
import { PAGE_SIZE, SparsePages } from './sparse-pages.js';

interface MemoryState {
  size: number;
  pages: SparsePages;
}

/** Allocates nothing: pages appear on first write. */
async function memoryOpen({ options }: { options: MemoryOptions }): Promise<MemoryState> {
  return { size: options.size, pages: new SparsePages() };
}

/** The disk size. */
function memoryGetLength(state: MemoryState): number {
  return state.size;
}

/** Copies out of the pages; unwritten ranges read as zeroes. */
async function memoryRead(state: MemoryState, offset: number, buf: Buffer): Promise<void> {
  state.pages.read(offset, buf);
}

/** Copies into the pages. */
async function memoryWrite(state: MemoryState, offset: number, buf: Buffer): Promise<void> {
  state.pages.write(offset, buf);
}

/** Drops whole pages and clears partial ones. */
async function memoryZero(state: MemoryState, offset: number, length: number): Promise<void> {
  state.pages.zero(offset, length);
}

/** Grows with zeroes or shrinks, dropping what lies beyond the new end. */
async function memoryTruncate(state: MemoryState, length: number): Promise<void> {
  if (length < state.size) state.pages.zero(length, state.size - length);
  state.size = length;
}

/** Written pages are data, the rest reads as zeroes. */
async function memoryBlockStatus(state: MemoryState, offset: number, length: number): Promise<BlockStatusExtent[]> {
  const extents: BlockStatusExtent[] = [];
  const end = offset + length;
  for (let position = offset; position < end; ) {
    const pageEnd = Math.min((Math.floor(position / PAGE_SIZE) + 1) * PAGE_SIZE, end);
    const data = state.pages.has(Math.floor(position / PAGE_SIZE));
    const last = extents[extents.length - 1];
    if (last !== undefined && last.data === data) last.length += pageEnd - position;
    else extents.push({ offset: position, length: pageEnd - position, data, zero: !data, allocated: true });
    position = pageEnd;
  }
  return extents;
}

/** Memory held, as the host-side size. */
async function memoryDescribe(state: MemoryState): Promise<{ actualSize: number }> {
  return { actualSize: state.pages.allocatedBytes };
}

export const memoryDriver = defineBlockDriver<MemoryOptions, MemoryState>({
  name: 'memory',
  kind: 'protocol',
  summary: 'sparse disk in RAM',
  options: memoryOptions,
  capabilities: { canZero: true, canDiscard: true, canFua: true, concurrency: 'parallel', growsZeroed: true },
  open: memoryOpen,
  getLength: memoryGetLength,
  read: memoryRead,
  write: memoryWrite,
  writeZeroes: memoryZero,
  discard: memoryZero,
  truncate: memoryTruncate,
  blockStatus: memoryBlockStatus,
  describe: memoryDescribe,
});
