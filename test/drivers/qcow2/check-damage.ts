/**
 * Images for the check tests: built with qemu-img and qemu-io, then
 * damaged deterministically by patching their bytes (refcounts, L1 and L2
 * entries, refcount table entries, header fields), as a crash or a bug
 * would leave them.
 */
import { open, truncate } from 'node:fs/promises';
import { run } from './fixture.js';

/** `qemu-img create -q -f qcow2 [-o OPTIONS] PATH SIZE`. */
export async function create(path: string, size: string, options = ''): Promise<void> {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...(options === '' ? [] : ['-o', options]), path, size]);
}

/** qemu-io commands on the image (`write -P 0x11 0 64k` …). */
export async function io(path: string, ...commands: string[]): Promise<void> {
  await run('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), path]);
}

export async function qemuImg(...args: string[]): Promise<void> {
  await run('qemu-img', args);
}

interface Layout {
  clusterSize: number;
  l1Offset: number;
  reftableOffset: number;
  refcountBits: number;
}

const OFFSET_MASK = 0x00fffffffffffe00n;

type Body<T> = (at: (offset: number) => Promise<bigint>, set: (offset: number, value: bigint) => Promise<void>, layout: Layout) => Promise<T>;

/** Runs `body` with the image's 64-bit fields to read and write, and its layout. */
async function withImage<T>(path: string, body: Body<T>): Promise<T> {
  const handle = await open(path, 'r+');
  try {
    const read = async (offset: number, length: number): Promise<Buffer> => {
      const buf = Buffer.alloc(length);
      await handle.read(buf, 0, length, offset);
      return buf;
    };
    const at = async (offset: number) => (await read(offset, 8)).readBigUInt64BE(0);
    const set = async (offset: number, value: bigint) => {
      const buf = Buffer.alloc(8);
      buf.writeBigUInt64BE(value);
      await handle.write(buf, 0, 8, offset);
    };
    const header = await read(0, 104);
    const layout: Layout = {
      clusterSize: 2 ** header.readUInt32BE(20),
      l1Offset: Number(header.readBigUInt64BE(40)),
      reftableOffset: Number(header.readBigUInt64BE(48)),
      refcountBits: header.readUInt32BE(4) >= 3 ? 2 ** header.readUInt32BE(96) : 16,
    };
    return await body(at, set, layout);
  } finally {
    await handle.close();
  }
}

/** Sets the stored refcount of host cluster `cluster` (its refcount block must exist). */
export async function setRefcount(path: string, cluster: number, value: number): Promise<void> {
  await withImage(path, async (at, set, { clusterSize, reftableOffset, refcountBits }) => {
    const perBlock = (clusterSize * 8) / refcountBits;
    const block = Number((await at(reftableOffset + Math.floor(cluster / perBlock) * 8)) & OFFSET_MASK);
    const bit = (cluster % perBlock) * refcountBits;
    // The 64-bit word holding the entry (entries never straddle one), big-endian bytes, sub-byte widths LSB first.
    const word = block + Math.floor(bit / 64) * 8;
    const old = await at(word);
    const width = BigInt(refcountBits);
    const mask = width === 64n ? 0xffffffffffffffffn : (1n << width) - 1n;
    const shift = refcountBits >= 8 ? BigInt(64 - (bit % 64) - refcountBits) : BigInt(56 - Math.floor((bit % 64) / 8) * 8 + (bit % 8));
    await set(word, (old & ~(mask << shift)) | (BigInt(value) << shift));
  });
}

/** File offset of active L1 entry `index`. */
export async function l1EntryAt(path: string, index: number): Promise<number> {
  return withImage(path, async (_at, _set, { l1Offset }) => l1Offset + index * 8);
}

/** File offset of the active L2 entry of guest offset `guest` (its L2 table must exist). */
export async function l2EntryAt(path: string, guest: number): Promise<number> {
  return withImage(path, async (at, _set, { clusterSize, l1Offset }) => {
    const entries = clusterSize / 8;
    const cluster = Math.floor(guest / clusterSize);
    const l2 = Number((await at(l1Offset + Math.floor(cluster / entries) * 8)) & OFFSET_MASK);
    return l2 + (cluster % entries) * 8;
  });
}

/** File offset of refcount table entry `index`. */
export async function reftableEntryAt(path: string, index: number): Promise<number> {
  return withImage(path, async (_at, _set, { reftableOffset }) => reftableOffset + index * 8);
}

/** Reads the 64-bit big-endian field at `offset`. */
export async function readU64(path: string, offset: number): Promise<bigint> {
  return withImage(path, (at) => at(offset));
}

/** Replaces the 64-bit big-endian field at `offset` with `update(old)`. */
export async function patchU64(path: string, offset: number, update: (old: bigint) => bigint): Promise<void> {
  await withImage(path, async (at, set) => set(offset, update(await at(offset))));
}

/** Grows the file by `bytes` of zeroes (room for a leaked cluster). */
export async function grow(path: string, bytes: number): Promise<void> {
  const handle = await open(path, 'r');
  const { size } = await handle.stat();
  await handle.close();
  await truncate(path, size + bytes);
}

export const COPIED = 1n << 63n;

/** The host cluster holding guest offset `guest` (a normal or zero-allocated cluster). */
export async function hostCluster(path: string, guest: number): Promise<number> {
  const entry = await readU64(path, await l2EntryAt(path, guest));
  return withImage(path, async (_at, _set, { clusterSize }) => Number(entry & OFFSET_MASK) / clusterSize);
}
