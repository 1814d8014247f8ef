/**
 * Write-zeroes and discard (QEMU's qcow2_co_pwrite_zeroes,
 * qcow2_subcluster_zeroize and qcow2_cluster_discard). v3 images mark whole
 * clusters as zero (keeping their host cluster, or dropping it when
 * unmapping is allowed); v2 images have no zero flag, so without a backing
 * file clusters are deallocated and with one (open or only named in the
 * header) zeroes are written as data.
 * A partial cluster becomes a zero cluster only if the rest of it already
 * reads as zeroes; otherwise zeroes are written as data.
 */
import type { ZeroFlags } from '../../core/block/request.js';
import { BlockIoError } from '../../core/errors.js';
import { type L2Entry, writeL2Entry } from './qcow2-format.js';
import { checkUsable, type DiscardType, type Qcow2Image } from './qcow2-image.js';
import { entryOf, forEachEntry, updateEntries } from './qcow2-l1-l2.js';
import { queueFreeEntry } from './qcow2-refcount.js';
import { statusExtents } from './qcow2-status.js';
import { prepareMetadataChange, syncIfFreesPile } from './qcow2-sync.js';
import { writeLocked } from './qcow2-write.js';

/** Largest buffer used when zeroes have to be written as data. */
const ZERO_CHUNK = 1 << 20;

function allocated(entry: L2Entry): boolean {
  return entry.kind === 'normal' || entry.kind === 'compressed' || entry.kind === 'zero-alloc';
}

/**
 * An unallocated cluster reads as zeroes for good: no backing node, and no
 * backing file named in the header that could be linked later (an image
 * opened with `backing: null`, as drive-mirror's target is until the end).
 */
function unallocatedStaysZero(image: Qcow2Image): boolean {
  return image.backing === undefined && image.backingName === undefined;
}

/** The new entry for a cluster being zeroed or discarded, or undefined to leave it. */
export type Rewrite = (entry: L2Entry) => { host: number; copied: boolean; zero: boolean; free: boolean } | undefined;

/**
 * Rewrites the entries of whole clusters `[first, first + count)` one L2
 * slice at a time (so other requests get the lock in between), queueing
 * the references dropped as frees of `type`.
 */
export async function rewriteClusters(image: Qcow2Image, first: number, count: number, rewrite: Rewrite, type: DiscardType = 'request'): Promise<void> {
  const step = image.l2SliceEntries;
  for (let start = first; start < first + count; ) {
    const end = Math.min(first + count, start - (start % step) + step);
    await image.lock.run(async () => {
      const changes = new Map<number, NonNullable<ReturnType<Rewrite>>>();
      const olds = new Map<number, L2Entry>();
      await forEachEntry(image, start, end - start, (first, entry, clusters) => {
        const change = rewrite(entry);
        if (change === undefined) return;
        for (let cluster = first; cluster < first + clusters; cluster++) {
          changes.set(cluster, change);
          olds.set(cluster, entry);
        }
      });
      if (changes.size === 0) return;
      await prepareMetadataChange(image);
      await updateEntries(image, start, end - start, (cluster, slice, at) => {
        const change = changes.get(cluster);
        if (change !== undefined) writeL2Entry(slice, at, change.host, change.copied, change.zero);
      });
      for (const [cluster, change] of changes) if (change.free) queueFreeEntry(image, olds.get(cluster)!, type);
      await syncIfFreesPile(image);
    });
    start = end;
  }
}

/** A full discard (discard_in_l2_slice with full_discard): the entry cleared, whatever the version, its cluster freed. */
export const discardForGood: Rewrite = (entry) =>
  entry.kind === 'unallocated' ? undefined : { host: 0, copied: false, zero: false, free: entry.kind !== 'zero-plain' };

/** v3 zeroing (zero_in_l2_slice): the zero flag, dropping the host cluster if compressed or unmapping. */
function zeroRewrite(image: Qcow2Image, mayUnmap: boolean): Rewrite {
  return (entry) => {
    // An unallocated cluster is flagged even without a backing file, as QEMU does: it must read as zeroes also
    // once the image names one (qemu-img rebase writes zeroes so, before the header changes).
    if (entry.kind === 'zero-plain') return undefined;
    const unmap = entry.kind === 'compressed' || (mayUnmap && allocated(entry));
    if (unmap || entry.kind === 'unallocated') return { host: 0, copied: false, zero: true, free: unmap };
    if (entry.kind === 'zero-alloc') return undefined;
    return { host: entry.host, copied: entry.copied, zero: true, free: false };
  };
}

/** Discard (discard_in_l2_slice): v3 leaves a zero cluster, v2 an unallocated one. */
function discardRewrite(image: Qcow2Image): Rewrite {
  return (entry) => {
    if (image.backing === undefined && !allocated(entry)) return undefined;
    const zero = image.version >= 3;
    if (entry.kind === (zero ? 'zero-plain' : 'unallocated')) return undefined;
    return { host: 0, copied: false, zero, free: allocated(entry) };
  };
}

/** Whether `[from, to)` reads as zeroes. */
async function readsZero(image: Qcow2Image, from: number, to: number): Promise<boolean> {
  if (from >= to) return true;
  return (await statusExtents(image, from, to - from)).every((e) => e.zero);
}

/** Writes zeroes as data. */
async function writeZeroData(image: Qcow2Image, offset: number, length: number, flags: ZeroFlags): Promise<void> {
  if (flags.noFallback) throw new BlockIoError('ENOTSUP');
  const zeroes = Buffer.alloc(Math.min(length, ZERO_CHUNK));
  for (let done = 0; done < length; done += zeroes.length) {
    await writeLocked(image, offset + done, zeroes.subarray(0, Math.min(zeroes.length, length - done)));
  }
}

/** Zeroes the part `[offset, end)` of one cluster: the whole cluster if the rest reads as zeroes already. */
async function zeroPartial(image: Qcow2Image, offset: number, end: number, flags: ZeroFlags): Promise<void> {
  const cs = image.g.clusterSize;
  const start = Math.floor(offset / cs) * cs;
  const { kind } = await image.lock.run(() => entryOf(image, start / cs));
  const zeroable = kind === 'unallocated' || kind === 'zero-plain' || kind === 'zero-alloc';
  const canFlag = image.version >= 3 || unallocatedStaysZero(image);
  if (canFlag && zeroable && (await readsZero(image, start, offset)) && (await readsZero(image, end, Math.min(start + cs, image.size)))) {
    await zeroClusters(image, start / cs, 1, flags);
  } else {
    await writeZeroData(image, offset, end - offset, flags);
  }
}

/** Whole clusters: zero flags (v3), deallocation (v2 without backing), else zeroes as data. */
async function zeroClusters(image: Qcow2Image, first: number, count: number, flags: ZeroFlags): Promise<void> {
  if (image.version >= 3) return rewriteClusters(image, first, count, zeroRewrite(image, flags.mayUnmap ?? false));
  if (unallocatedStaysZero(image)) return rewriteClusters(image, first, count, discardRewrite(image));
  const cs = image.g.clusterSize;
  const end = Math.min((first + count) * cs, image.size);
  await writeZeroData(image, first * cs, end - first * cs, flags);
}

/** Write-zeroes over `[offset, offset + length)`, excluding other requests on those clusters. */
export async function zeroGuest(image: Qcow2Image, offset: number, length: number, flags: ZeroFlags): Promise<void> {
  checkUsable(image);
  const cs = image.g.clusterSize;
  const end = offset + length;
  const release = await image.ranges.acquire(Math.floor(offset / cs), Math.ceil(end / cs), true);
  try {
    await zeroLocked(image, offset, end, flags);
  } finally {
    release();
  }
}

/** Write-zeroes with the range lock held: partial head and tail clusters, whole clusters between. */
export async function zeroLocked(image: Qcow2Image, offset: number, end: number, flags: ZeroFlags): Promise<void> {
  const cs = image.g.clusterSize;
  const alignedStart = Math.ceil(offset / cs) * cs;
  // The image's final partial cluster counts as whole when the request runs to the end.
  const alignedEnd = end === image.size ? end : Math.floor(end / cs) * cs;
  const headEnd = Math.min(end, alignedStart);
  if (offset < headEnd) await zeroPartial(image, offset, headEnd, flags);
  if (alignedEnd > alignedStart) {
    await zeroClusters(image, alignedStart / cs, Math.ceil(alignedEnd / cs) - alignedStart / cs, flags);
  }
  const tailStart = Math.max(alignedEnd, headEnd);
  if (tailStart < end) await zeroPartial(image, tailStart, end, flags);
}

/** Discard: whole clusters only (partial ones are ignored, as in QEMU), except the image's final partial cluster. */
export async function discardGuest(image: Qcow2Image, offset: number, length: number): Promise<void> {
  checkUsable(image);
  const cs = image.g.clusterSize;
  const end = offset + length;
  const first = Math.ceil(offset / cs);
  const last = end === image.size ? Math.ceil(end / cs) : Math.floor(end / cs);
  if (last <= first) return;
  const release = await image.ranges.acquire(first, last, true);
  try {
    await rewriteClusters(image, first, last - first, discardRewrite(image));
  } finally {
    release();
  }
}
