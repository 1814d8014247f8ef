/**
 * The two-level map from guest clusters to host clusters: L1 entries (the
 * whole active L1 table lives in memory), L2 entries through the L2 slice
 * cache, validation of what they say (a bad entry is corruption), and
 * writable L2 tables, allocated or copied when the table is shared.
 * Called with the metadata lock held.
 */
import { hasZeroFlag, hex, type L2Entry, readL1Entry, readL2Entry, writeL1Entry } from './qcow2-format.js';
import { type Qcow2Image, signalCorruption } from './qcow2-image.js';
import { checkOverlap, writeMetadata } from './qcow2-overlap.js';
import { allocateNonZero, queueFree } from './qcow2-refcount.js';

const UNALLOCATED: L2Entry = { kind: 'unallocated', host: 0, copied: false, compressedLength: 0, invalid: false };

/** The L2 table of L1 index `index`: its offset (0: none) and whether it is exclusively ours (COPIED). */
async function l2Table(image: Qcow2Image, index: number): Promise<{ offset: number; copied: boolean }> {
  const { offset, copied, reserved } = readL1Entry(image.l1, index * 8);
  if (reserved) await signalCorruption(image, `L1 entry with reserved bits set (L1 index: ${hex(index)})`);
  if (offset % image.g.clusterSize !== 0) {
    await signalCorruption(image, `L2 table offset ${hex(offset)} unaligned (L1 index: ${hex(index)})`);
  }
  return { offset, copied };
}

/** What is wrong with a decoded entry, as QEMU or qemu-img check would call it corrupt; undefined if nothing. */
function entryProblem(image: Qcow2Image, entry: L2Entry, slice: Buffer, at: number): string | undefined {
  if (entry.kind !== 'compressed' && image.version < 3 && hasZeroFlag(slice, at)) return 'Zero cluster entry found in pre-v3 image';
  if (entry.invalid) return entry.kind === 'compressed' ? 'Compressed cluster entry with COPIED flag set' : 'L2 entry with reserved bits set';
  if ((entry.kind === 'normal' || entry.kind === 'zero-alloc') && entry.host % image.g.clusterSize !== 0) {
    return `Cluster allocation offset ${hex(entry.host)} unaligned`;
  }
  return undefined;
}

/**
 * Calls `visit` with the entries of the guest clusters from `first`, `count`
 * of them, in order: one call per cluster, except that a range without an
 * L2 table comes as one call with its length in clusters. Stops early when
 * `visit` returns false.
 */
export async function forEachEntry(
  image: Qcow2Image,
  first: number,
  count: number,
  visit: (cluster: number, entry: L2Entry, clusters: number) => boolean | void,
): Promise<void> {
  const { l2Entries } = image.g;
  const sliceEntries = image.l2SliceEntries;
  const end = first + count;
  for (let cluster = first; cluster < end; ) {
    const l1Index = Math.floor(cluster / l2Entries);
    const { offset } = await l2Table(image, l1Index);
    if (offset === 0) {
      const tableEnd = Math.min(end, (l1Index + 1) * l2Entries);
      if (visit(cluster, UNALLOCATED, tableEnd - cluster) === false) return;
      cluster = tableEnd;
      continue;
    }
    const l2Index = cluster % l2Entries;
    const sliceStart = l2Index - (l2Index % sliceEntries);
    const sliceEnd = Math.min(end, cluster - (l2Index % sliceEntries) + sliceEntries);
    const slice = await image.l2Cache.get(offset + sliceStart * 8);
    for (; cluster < sliceEnd; cluster++) {
      const index = cluster % l2Entries;
      const at = (index - sliceStart) * 8;
      const entry = readL2Entry(slice, at, image.g, image.version);
      const problem = entryProblem(image, entry, slice, at);
      if (problem !== undefined) await signalCorruption(image, `${problem} (L2 offset: ${hex(offset)}, L2 index: ${hex(index)})`);
      if (visit(cluster, entry, 1) === false) return;
    }
  }
}

/**
 * forEachEntry without waiting and without the metadata lock, for the fast
 * paths of reads and writes: it returns whether it ran to the end, which it
 * does only if every L2 slice it needs is cached, every entry is sound and
 * `visit` never returned false. Otherwise the caller goes the locked way,
 * which loads what is missing and reports what is corrupt. (The entries
 * are read in one synchronous step, so no locked change is seen half done;
 * requests on the same clusters are kept apart by the range lock.)
 */
export function forEachCachedEntry(
  image: Qcow2Image,
  first: number,
  count: number,
  visit: (cluster: number, entry: L2Entry, clusters: number) => boolean | void,
): boolean {
  const { l2Entries, clusterSize } = image.g;
  const sliceEntries = image.l2SliceEntries;
  const end = first + count;
  for (let cluster = first; cluster < end; ) {
    const l1Index = Math.floor(cluster / l2Entries);
    const { offset, reserved } = readL1Entry(image.l1, l1Index * 8);
    if (reserved || offset % clusterSize !== 0) return false;
    if (offset === 0) {
      const tableEnd = Math.min(end, (l1Index + 1) * l2Entries);
      if (visit(cluster, UNALLOCATED, tableEnd - cluster) === false) return false;
      cluster = tableEnd;
      continue;
    }
    const l2Index = cluster % l2Entries;
    const sliceStart = l2Index - (l2Index % sliceEntries);
    const sliceEnd = Math.min(end, cluster - (l2Index % sliceEntries) + sliceEntries);
    const slice = image.l2Cache.peek(offset + sliceStart * 8);
    if (slice === undefined) return false;
    for (; cluster < sliceEnd; cluster++) {
      const at = ((cluster % l2Entries) - sliceStart) * 8;
      const entry = readL2Entry(slice, at, image.g, image.version);
      if (entryProblem(image, entry, slice, at) !== undefined || visit(cluster, entry, 1) === false) return false;
    }
  }
  return true;
}

/** The entry of one guest cluster. */
export async function entryOf(image: Qcow2Image, cluster: number): Promise<L2Entry> {
  let found = UNALLOCATED;
  await forEachEntry(image, cluster, 1, (_, entry) => {
    found = entry;
  });
  return found;
}

function markL1Dirty(image: Qcow2Image, index: number): void {
  const dirty = image.l1Dirty;
  image.l1Dirty = dirty === undefined ? { from: index, to: index + 1 } : { from: Math.min(dirty.from, index), to: Math.max(dirty.to, index + 1) };
}

/** Writes the L1 entries changed in memory. */
export async function writeDirtyL1(image: Qcow2Image): Promise<void> {
  const dirty = image.l1Dirty;
  if (dirty === undefined) return;
  await writeMetadata(image, image.l1Offset + dirty.from * 8, image.l1.subarray(dirty.from * 8, dirty.to * 8), 'active L1 table');
  image.l1Dirty = undefined;
}

/**
 * An L2 table for L1 index `index` that may be changed in place: the
 * current one if COPIED, else a new one (zeroed, or a copy of the shared
 * table, whose old reference is dropped). The new L1 entry stays in memory
 * until the next metadata sync writes it after the table.
 */
export async function writableL2Table(image: Qcow2Image, index: number): Promise<number> {
  const { offset, copied } = await l2Table(image, index);
  if (offset !== 0 && copied) return offset;
  const cs = image.g.clusterSize;
  const fresh = await allocateNonZero(image, 1, 'L2 table');
  image.l2Cache.dropRange(fresh, fresh + cs);
  if (offset === 0) {
    await checkOverlap(image, fresh, cs);
    await image.file.writeZeroes(fresh, cs);
    image.unflushed = true;
  } else {
    const table = Buffer.alloc(cs);
    const sliceBytes = image.l2SliceEntries * 8;
    for (let at = 0; at < cs; at += sliceBytes) (await image.l2Cache.get(offset + at)).copy(table, at);
    await writeMetadata(image, fresh, table);
    image.metadata.delete(offset / cs);
    queueFree(image, offset, cs, 'other');
  }
  writeL1Entry(image.l1, index * 8, fresh, true);
  markL1Dirty(image, index);
  image.metadata.set(fresh / cs, 'l2');
  return fresh;
}

/**
 * Changes the entries of `count` guest clusters from `first`: `update` gets
 * each cluster's slice and byte position and edits the entry in place.
 */
export async function updateEntries(
  image: Qcow2Image,
  first: number,
  count: number,
  update: (cluster: number, slice: Buffer, at: number) => void,
): Promise<void> {
  for (const span of sliceSpans(image, first, count)) {
    const sliceOffset = (await writableL2Table(image, span.l1Index)) + span.sliceStart * 8;
    updateSlice(image, span, sliceOffset, await image.l2Cache.get(sliceOffset), update);
  }
}

/**
 * updateEntries without waiting: only if every L2 table involved is ours
 * (COPIED) and every slice cached. Returns whether it did; if not, nothing
 * changed and updateEntries must do it.
 */
export function updateCachedEntries(
  image: Qcow2Image,
  first: number,
  count: number,
  update: (cluster: number, slice: Buffer, at: number) => void,
): boolean {
  const slices: [SliceSpan, number, Buffer][] = [];
  for (const span of sliceSpans(image, first, count)) {
    const { offset, copied, reserved } = readL1Entry(image.l1, span.l1Index * 8);
    if (offset === 0 || !copied || reserved || offset % image.g.clusterSize !== 0) return false;
    const slice = image.l2Cache.peek(offset + span.sliceStart * 8);
    if (slice === undefined) return false;
    slices.push([span, offset + span.sliceStart * 8, slice]);
  }
  for (const [span, sliceOffset, slice] of slices) updateSlice(image, span, sliceOffset, slice, update);
  return true;
}

/** The clusters `[from, to)` of one L2 slice: table `l1Index`, slice starting at entry `sliceStart`. */
interface SliceSpan {
  l1Index: number;
  sliceStart: number;
  from: number;
  to: number;
}

/** `count` guest clusters from `first`, cut where L2 slices end. */
function* sliceSpans(image: Qcow2Image, first: number, count: number): Generator<SliceSpan> {
  const { l2Entries } = image.g;
  const sliceEntries = image.l2SliceEntries;
  const end = first + count;
  for (let cluster = first; cluster < end; ) {
    const l2Index = cluster % l2Entries;
    const to = Math.min(end, cluster - (l2Index % sliceEntries) + sliceEntries);
    yield { l1Index: Math.floor(cluster / l2Entries), sliceStart: l2Index - (l2Index % sliceEntries), from: cluster, to };
    cluster = to;
  }
}

function updateSlice(
  image: Qcow2Image,
  span: SliceSpan,
  sliceOffset: number,
  slice: Buffer,
  update: (cluster: number, slice: Buffer, at: number) => void,
): void {
  const { l2Entries } = image.g;
  for (let cluster = span.from; cluster < span.to; cluster++) update(cluster, slice, ((cluster % l2Entries) - span.sliceStart) * 8);
  image.l2Cache.markDirty(sliceOffset);
}
