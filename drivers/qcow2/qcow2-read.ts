/**
 * Reading: the guest range is mapped to extents under the metadata lock,
 * then the bytes come from the file (normal clusters), zeroes (zero
 * clusters), the backing node or zeroes (unallocated clusters), or
 * inflated compressed clusters, with the lock released.
 */
import { type CopyRange, subRange, zeroDestination } from '../../core/block/copy-range.js';
import { BlockIoError } from '../../core/errors.js';
import type { ClusterKind, L2Entry } from './qcow2-format.js';
import { checkUsable, type Qcow2Image, readFile } from './qcow2-image.js';
import { decompressCluster } from './qcow2-compress.js';
import { forEachCachedEntry, forEachEntry } from './qcow2-l1-l2.js';

/** A guest range with one kind of content; `host` is where normal data for `offset` lies. */
export interface Extent {
  offset: number;
  length: number;
  kind: ClusterKind;
  host: number;
  /** The L2 entry of the extent's first cluster (compressed extents are one cluster each). */
  entry: L2Entry;
}

/** A forEachEntry visitor that gathers the guest range `[offset, end)` into `extents`. */
function collectExtents(cs: number, offset: number, end: number, extents: Extent[]) {
  return (cluster: number, entry: L2Entry, clusters: number): void => {
    const clusterStart = cluster * cs;
    const from = Math.max(offset, clusterStart);
    const to = Math.min(end, clusterStart + clusters * cs);
    const host = entry.kind === 'normal' ? entry.host + (from - clusterStart) : 0;
    const last = extents[extents.length - 1];
    const joins =
      last !== undefined &&
      last.kind === entry.kind &&
      entry.kind !== 'compressed' &&
      (entry.kind !== 'normal' || last.host + last.length === host);
    if (joins) last.length += to - from;
    else extents.push({ offset: from, length: to - from, kind: entry.kind, host, entry });
  };
}

/** Maps `[offset, offset + length)` to extents (lock held); stops after `maxClusters` clusters. */
export async function mapExtents(image: Qcow2Image, offset: number, length: number, maxClusters = Infinity): Promise<Extent[]> {
  const cs = image.g.clusterSize;
  const end = offset + length;
  const first = Math.floor(offset / cs);
  const count = Math.min(Math.ceil(end / cs) - first, maxClusters);
  const extents: Extent[] = [];
  await forEachEntry(image, first, count, collectExtents(cs, offset, end, extents));
  return extents;
}

/** mapExtents from the cached L2 slices alone, without the lock (forEachCachedEntry); undefined if they do not suffice. */
function mapCachedExtents(image: Qcow2Image, offset: number, length: number): Extent[] | undefined {
  const cs = image.g.clusterSize;
  const end = offset + length;
  const first = Math.floor(offset / cs);
  const extents: Extent[] = [];
  return forEachCachedEntry(image, first, Math.ceil(end / cs) - first, collectExtents(cs, offset, end, extents)) ? extents : undefined;
}

/** Guest bytes from the backing node; past its end (or without one) they are zeroes. */
export async function readBacking(image: Qcow2Image, offset: number, buf: Buffer): Promise<void> {
  const backing = image.backing;
  const inside = backing === undefined ? 0 : Math.max(0, Math.min(buf.length, backing.length - offset));
  if (inside > 0) await backing!.read(offset, buf.subarray(0, inside));
  if (inside < buf.length) buf.fill(0, inside);
}

/** The whole guest cluster a compressed entry describes. */
export async function readCompressed(image: Qcow2Image, entry: L2Entry): Promise<Buffer> {
  const data = Buffer.alloc(entry.compressedLength);
  await readFile(image.file, entry.host, data);
  return decompressCluster(data, image.g.clusterSize, image.compressionType);
}

/** Fills `buf` with the content of `extent` (whose range `buf` is). */
async function readExtent(image: Qcow2Image, extent: Extent, buf: Buffer): Promise<void> {
  switch (extent.kind) {
    case 'normal':
      return readFile(image.file, extent.host, buf);
    case 'unallocated':
      return readBacking(image, extent.offset, buf);
    case 'compressed': {
      const cs = image.g.clusterSize;
      const cluster = await readCompressed(image, extent.entry);
      cluster.copy(buf, 0, extent.offset % cs, (extent.offset % cs) + extent.length);
      return;
    }
    default:
      buf.fill(0);
  }
}

/** Reads guest bytes with the lock held and the clusters already taken (a resize's copy-on-write). */
export async function readGuestLocked(image: Qcow2Image, offset: number, buf: Buffer): Promise<void> {
  for (const extent of await mapExtents(image, offset, buf.length)) {
    await readExtent(image, extent, buf.subarray(extent.offset - offset, extent.offset - offset + extent.length));
  }
}

/** Reads guest bytes, sharing the clusters with other readers while writers wait. */
export async function readGuest(image: Qcow2Image, offset: number, buf: Buffer): Promise<void> {
  checkUsable(image);
  const cs = image.g.clusterSize;
  const first = Math.floor(offset / cs);
  const end = Math.ceil((offset + buf.length) / cs);
  const release = image.ranges.tryAcquire(first, end, false) ?? (await image.ranges.acquire(first, end, false));
  try {
    const extents = mapCachedExtents(image, offset, buf.length) ?? (await image.lock.run(() => mapExtents(image, offset, buf.length)));
    if (extents.length === 1) {
      await readExtent(image, extents[0]!, buf);
    } else {
      await Promise.all(
        extents.map((e) => readExtent(image, e, buf.subarray(e.offset - offset, e.offset - offset + e.length))),
      );
    }
  } finally {
    release();
  }
}

/**
 * Copy offloading's source side (QEMU's qcow2_co_copy_range_from): each
 * extent goes on to where its bytes lie (the file's clusters, the backing
 * node), or zeroes the destination; compressed clusters cannot be copied
 * as they are (ENOTSUP). The clusters are shared as for a read meanwhile.
 */
export async function copyRangeFromGuest(image: Qcow2Image, range: CopyRange): Promise<void> {
  checkUsable(image);
  const cs = image.g.clusterSize;
  const { offset } = range.from;
  const first = Math.floor(offset / cs);
  const end = Math.ceil((offset + range.length) / cs);
  const release = image.ranges.tryAcquire(first, end, false) ?? (await image.ranges.acquire(first, end, false));
  try {
    const { file, backing } = image;
    for (const extent of await image.lock.run(() => mapExtents(image, offset, range.length))) {
      const part = subRange(range, extent.offset - offset, extent.length);
      if (extent.kind === 'compressed') {
        throw new BlockIoError('ENOTSUP', `qcow2: cannot offload a copy of compressed data (offset ${extent.offset})`);
      }
      if (extent.kind === 'normal') {
        if (file.copyRangeFrom === undefined) throw new BlockIoError('ENOTSUP', 'qcow2: this image file cannot offload copies');
        await file.copyRangeFrom(extent.host, part);
      }
      else if (extent.kind === 'unallocated' && backing !== undefined) {
        // Past the backing node's end the image reads as zeroes.
        const inside = Math.max(0, Math.min(extent.length, backing.length - extent.offset));
        if (inside > 0) await backing.copyRangeFrom(extent.offset, subRange(part, 0, inside));
        if (inside < extent.length) await zeroDestination(subRange(part, inside, extent.length - inside));
      } else await zeroDestination(part);
    }
  } finally {
    release();
  }
}
