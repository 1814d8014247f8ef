/**
 * Writing guest data (reference §3.5). Under the metadata lock a write is
 * planned: clusters we own (COPIED) are written in place; every other
 * cluster gets a new one, allocated after its L2 table is made writable.
 * The data, with head and tail copied from the old content (backing file,
 * zeroes, compressed or shared cluster), is written without the lock. Then,
 * under the lock again, the L2 entries are pointed at the new clusters and
 * the old references queued for freeing.
 */
import { type CopyRange, subRange } from '../../core/block/copy-range.js';
import { BlockIoError } from '../../core/errors.js';
import { type L2Entry, writeCompressedEntry, writeL2Entry } from './qcow2-format.js';
import { checkUsable, copyIntoFile, growFile, type Qcow2Image, readFile, writeFile } from './qcow2-image.js';
import { compressCluster } from './qcow2-compress.js';
import { freeOld, linkCached, owned, planNewClusters, pointAt } from './qcow2-cached-write.js';
import { entryOf, forEachCachedEntry, forEachEntry, updateEntries, writableL2Table } from './qcow2-l1-l2.js';
import { cachedOverlap, checkOverlap } from './qcow2-overlap.js';
import { readBacking, readCompressed } from './qcow2-read.js';
import { allocateBytes, allocateNonZero, queueFree } from './qcow2-refcount.js';
import { freesPiled, prepareForWrite, prepareMetadataChange, syncIfFreesPile } from './qcow2-sync.js';

/** A guest range written where its clusters already are. */
interface InPlace {
  kind: 'in-place';
  offset: number;
  length: number;
  host: number;
}

/** A zero cluster that keeps its host cluster: rewritten whole, then its zero flag cleared. */
interface ReuseZero {
  kind: 'reuse-zero';
  cluster: number;
  host: number;
}

/** Consecutive guest clusters moved to newly allocated, contiguous host clusters. */
export interface Allocation {
  kind: 'alloc';
  first: number;
  count: number;
  host: number;
  old: L2Entry[];
  /** The new clusters lie where the file reads as zeroes (Qcow2Image.freshFrom). */
  fresh: boolean;
}

export type Piece = InPlace | ReuseZero | Allocation;

/** Decides where each cluster of the write goes and allocates what is needed (lock held). */
async function planWrite(image: Qcow2Image, offset: number, length: number): Promise<Piece[]> {
  await prepareForWrite(image);
  const { clusterSize: cs, l2Entries } = image.g;
  const end = offset + length;
  const first = Math.floor(offset / cs);
  const entries: L2Entry[] = [];
  await forEachEntry(image, first, Math.ceil(end / cs) - first, (_, entry, clusters) => {
    for (let i = 0; i < clusters; i++) entries.push(entry);
  });
  const pieces: Piece[] = [];
  for (let i = 0; i < entries.length; ) {
    const cluster = first + i;
    const entry = entries[i]!;
    const from = Math.max(offset, cluster * cs);
    const to = Math.min(end, (cluster + 1) * cs);
    if (entry.kind === 'normal' && entry.copied) {
      const host = entry.host + (from - cluster * cs);
      await checkOverlap(image, host, to - from);
      await growFile(image, host + (to - from));
      const last = pieces[pieces.length - 1];
      if (last?.kind === 'in-place' && last.host + last.length === host) last.length += to - from;
      else pieces.push({ kind: 'in-place', offset: from, length: to - from, host });
      i++;
    } else if (owned(entry)) {
      await prepareMetadataChange(image);
      await writableL2Table(image, Math.floor(cluster / l2Entries));
      await checkOverlap(image, entry.host, cs);
      await growFile(image, entry.host + cs);
      pieces.push({ kind: 'reuse-zero', cluster, host: entry.host });
      i++;
    } else {
      let count = 1;
      while (i + count < entries.length && !owned(entries[i + count]!) && (cluster + count) % l2Entries !== 0) count++;
      await prepareMetadataChange(image);
      await writableL2Table(image, Math.floor(cluster / l2Entries));
      const host = await allocateNonZero(image, count, 'data cluster');
      await checkOverlap(image, host, count * cs);
      const fresh = image.freshFrom !== undefined && host >= image.freshFrom;
      pieces.push({ kind: 'alloc', first: cluster, count, host, old: entries.slice(i, i + count), fresh });
      i += count;
    }
  }
  return pieces;
}

/**
 * Cluster buffers for partial-cluster merges, reused: a fresh zeroed buffer
 * per allocating write costs more (allocation, then garbage collection of
 * external memory) than clearing the bytes the new data leaves. At most a
 * few per cluster size are kept.
 */
const spareClusters = new Map<number, Buffer[]>();
const MAX_SPARE_CLUSTERS = 16;

function takeCluster(cs: number): Buffer {
  return spareClusters.get(cs)?.pop() ?? Buffer.allocUnsafeSlow(cs);
}

/** Gives back a cluster buffer nothing refers to any more. */
function giveCluster(buf: Buffer): void {
  let spare = spareClusters.get(buf.length);
  if (spare === undefined) spareClusters.set(buf.length, (spare = []));
  if (spare.length < MAX_SPARE_CLUSTERS) spare.push(buf);
}

/**
 * A cluster buffer holding what `cluster` reads as before this write,
 * except in `[from, to)` (cluster-relative), which the caller fills with the
 * new data; the caller gives it back with giveCluster once written.
 */
async function mergeBuffer(image: Qcow2Image, cluster: number, entry: L2Entry, from: number, to: number): Promise<Buffer> {
  const cs = image.g.clusterSize;
  const buf = takeCluster(cs);
  if (entry.kind === 'compressed') {
    (await readCompressed(image, entry)).copy(buf);
  } else if (entry.kind === 'normal') {
    await readFile(image.file, entry.host, buf);
  } else if (!readsAsZeroes(image, entry)) {
    await readBacking(image, cluster * cs, buf);
  } else {
    buf.fill(0, 0, from);
    buf.fill(0, to);
  }
  return buf;
}

/** Without a backing node an unallocated cluster reads as zeroes, as zero clusters do. */
function readsAsZeroes(image: Qcow2Image, entry: L2Entry): boolean {
  return entry.kind !== 'compressed' && entry.kind !== 'normal' && !(entry.kind === 'unallocated' && image.backing !== undefined);
}

/**
 * What a write stores: the caller's buffer, or (copy offloading) bytes the
 * file child copies from another node, which a partial cluster reads
 * instead, to merge them with its old content (QEMU's copy-on-write of the
 * cluster's head and tail around the copy).
 */
type GuestData = Buffer | CopiedData;

class CopiedData {
  constructor(private readonly range: CopyRange) {}

  get length(): number {
    return this.range.length;
  }

  /** The guest bytes `[from, to)` of the write (image offsets) copied to `host` in the file. */
  store(image: Qcow2Image, host: number, from: number, to: number): Promise<void> {
    return copyIntoFile(image, host, subRange(this.range, from - this.range.to.offset, to - from));
  }

  /** The guest bytes `[from, to)` of the write read from the source into `into`. */
  read(from: number, into: Buffer): Promise<void> {
    const source = this.range.from;
    return source.node.read(source.offset + (from - this.range.to.offset), into, { nested: source.nested });
  }
}

/** Allocates a fresh cluster in the file without writing it, where the file can (ZERO_RANGE); nothing otherwise. */
async function zeroFreshCluster(image: Qcow2Image, host: number): Promise<void> {
  try {
    await image.file.writeZeroes(host, image.g.clusterSize, { noFallback: true });
  } catch (error) {
    if (!(error instanceof BlockIoError && error.errno === 'ENOTSUP')) throw error;
  }
}

/** Writes one piece's data (no lock): whole clusters straight from `data`, partial ones merged with their old content. */
async function writePiece(image: Qcow2Image, piece: Piece, offset: number, data: GuestData): Promise<void> {
  const cs = image.g.clusterSize;
  const end = offset + data.length;
  const store = (host: number, from: number, to: number): Promise<void> =>
    data instanceof CopiedData ? data.store(image, host, from, to) : writeFile(image, host, data.subarray(from - offset, to - offset));
  /** Writes the part of `data` inside guest cluster `cluster` over `content` (its old content) at `host`. */
  const merged = async (cluster: number, content: Buffer, host: number): Promise<void> => {
    const from = Math.max(offset, cluster * cs);
    const to = Math.min(end, (cluster + 1) * cs);
    if (data instanceof CopiedData) await data.read(from, content.subarray(from - cluster * cs, to - cluster * cs));
    else data.copy(content, from - cluster * cs, from - offset, to - offset);
    await writeFile(image, host, content);
    giveCluster(content);
  };
  const range = (cluster: number): [number, number] => [Math.max(offset, cluster * cs) - cluster * cs, Math.min(end, (cluster + 1) * cs) - cluster * cs];
  if (piece.kind === 'in-place') {
    await store(piece.host, piece.offset, piece.offset + piece.length);
    return;
  }
  if (piece.kind === 'reuse-zero') {
    const [from, to] = range(piece.cluster);
    const content = takeCluster(cs);
    content.fill(0, 0, from);
    content.fill(0, to);
    await merged(piece.cluster, content, piece.host);
    return;
  }
  let wholeFrom = -1;
  for (let j = 0; j <= piece.count; j++) {
    const cluster = piece.first + j;
    const whole = j < piece.count && offset <= cluster * cs && end >= (cluster + 1) * cs;
    if (whole && wholeFrom < 0) wholeFrom = j;
    if (whole) continue;
    if (wholeFrom >= 0) {
      await store(piece.host + wholeFrom * cs, (piece.first + wholeFrom) * cs, cluster * cs);
      wholeFrom = -1;
    }
    if (j === piece.count) break;
    const [from, to] = range(cluster);
    const old = piece.old[j]!;
    if (piece.fresh && readsAsZeroes(image, old)) {
      // The rest of the cluster reads as zeroes already, as it must: only the data is written, into the cluster
      // zeroed first as QEMU's handle_alloc_space zeroes it (allocated, not written).
      await zeroFreshCluster(image, piece.host + j * cs);
      await store(piece.host + j * cs + from, cluster * cs + from, cluster * cs + to);
      continue;
    }
    await merged(cluster, await mergeBuffer(image, cluster, old, from, to), piece.host + j * cs);
  }
}

/** Points the L2 entries at the written clusters and queues the old references (lock held). */
async function linkPieces(image: Qcow2Image, pieces: Piece[]): Promise<void> {
  for (const piece of pieces) {
    if (piece.kind === 'reuse-zero') {
      await updateEntries(image, piece.cluster, 1, (_, slice, at) => writeL2Entry(slice, at, piece.host, true, false));
    } else if (piece.kind === 'alloc') {
      await updateEntries(image, piece.first, piece.count, pointAt(image, piece));
      freeOld(image, piece);
    }
  }
  await syncIfFreesPile(image);
}

/** Writes guest data; the caller holds the range lock of the clusters. */
export async function writeLocked(image: Qcow2Image, offset: number, data: GuestData): Promise<void> {
  const planned = planNewClusters(image, offset, data.length);
  const pieces = planned !== undefined ? [planned] : await image.lock.run(() => planWrite(image, offset, data.length));
  try {
    await Promise.all(pieces.map((piece) => writePiece(image, piece, offset, data)));
  } catch (error) {
    // Clusters allocated for this write were never published: give them back.
    await image.lock.run(async () => {
      for (const p of pieces) if (p.kind === 'alloc') queueFree(image, p.host, p.count * image.g.clusterSize, 'never');
    });
    throw error;
  }
  if (!linkCached(image, pieces)) await image.lock.run(() => linkPieces(image, pieces));
  else if (freesPiled(image)) await image.lock.run(() => syncIfFreesPile(image));
}

/**
 * Where `[offset, offset + length)` lies in the file if the write can go
 * straight there without the metadata lock: every cluster a normal one we
 * own (COPIED), contiguous in the file and inside it, its L2 slice cached,
 * the first write prepared for, and the overlap check passed without I/O.
 * Such a write needs no metadata change (planWrite would make it one
 * in-place piece). Undefined otherwise: the locked way then decides.
 */
function inPlaceHost(image: Qcow2Image, offset: number, length: number): number | undefined {
  if (!image.preparedForWrite || image.failure !== undefined || image.overlap === 'all') return undefined;
  const cs = image.g.clusterSize;
  const first = Math.floor(offset / cs);
  let start = -1;
  const mapped = forEachCachedEntry(image, first, Math.ceil((offset + length) / cs) - first, (cluster, entry) => {
    if (entry.kind !== 'normal' || !entry.copied) return false;
    if (start < 0) start = entry.host - first * cs;
    return entry.host === start + cluster * cs;
  });
  if (!mapped) return undefined;
  const host = start + offset;
  if (host + length > image.file.length || cachedOverlap(image, host, length) !== undefined) return undefined;
  return host;
}

/**
 * Writes guest data. A write in place changes no metadata, so it shares
 * its clusters with reads and other writes in place (as QEMU lets them run
 * side by side); any other write has them to itself (allocation and
 * copy-on-write must not interleave with anything on the same clusters).
 */
export function writeGuest(image: Qcow2Image, offset: number, buf: Buffer): Promise<void> {
  try {
    checkUsable(image);
  } catch (error) {
    return Promise.reject(error);
  }
  const cs = image.g.clusterSize;
  const first = Math.floor(offset / cs);
  const end = Math.ceil((offset + buf.length) / cs);
  // The common case, without an async frame: the clusters free to share and the write in place.
  const shared = image.ranges.tryAcquire(first, end, false);
  if (shared === undefined) return sharedThenLocked(image, offset, buf, first, end);
  let host: number | undefined;
  try {
    // While the clusters are shared, nothing can change where they are.
    host = inPlaceHost(image, offset, buf.length);
  } catch (error) {
    shared();
    return Promise.reject(error);
  }
  if (host === undefined) {
    shared();
    return lockedWrite(image, offset, buf, first, end);
  }
  return writeFile(image, host, buf, shared);
}

/** writeGuest once the clusters could not be shared at once: waits for them, then as writeGuest. */
async function sharedThenLocked(image: Qcow2Image, offset: number, buf: Buffer, first: number, end: number): Promise<void> {
  const shared = await image.ranges.acquire(first, end, false);
  try {
    const host = inPlaceHost(image, offset, buf.length);
    if (host !== undefined) return await writeFile(image, host, buf);
  } finally {
    shared();
  }
  await lockedWrite(image, offset, buf, first, end);
}

/** A write that may change metadata, with its clusters to itself. */
async function lockedWrite(image: Qcow2Image, offset: number, data: GuestData, first: number, end: number): Promise<void> {
  const release = image.ranges.tryAcquire(first, end, true) ?? (await image.ranges.acquire(first, end, true));
  try {
    await writeLocked(image, offset, data);
  } finally {
    release();
  }
}

/**
 * Copy offloading's destination side (QEMU's qcow2_co_copy_range_to): the
 * clusters are found or allocated as for a write, the file child copies the
 * bytes into them, then the L2 entries point at them.
 */
export function copyRangeToGuest(image: Qcow2Image, range: CopyRange): Promise<void> {
  try {
    checkUsable(image);
  } catch (error) {
    return Promise.reject(error);
  }
  const cs = image.g.clusterSize;
  const { offset } = range.to;
  return lockedWrite(image, offset, new CopiedData(range), Math.floor(offset / cs), Math.ceil((offset + range.length) / cs));
}

/** Stores one compressed cluster at `offset` (range lock held); false if it must be stored as is. */
async function writeCompressedCluster(image: Qcow2Image, offset: number, data: Buffer): Promise<boolean> {
  const { clusterSize: cs, l2Entries } = image.g;
  const padded = data.length === cs ? data : Buffer.concat([data, Buffer.alloc(cs - data.length)]);
  const compressed = await compressCluster(padded, image.compressionType);
  if (compressed === undefined) return false;
  const cluster = offset / cs;
  const host = await image.lock.run(async () => {
    await prepareMetadataChange(image);
    const entry = await entryOf(image, cluster);
    if (entry.kind !== 'unallocated' && entry.kind !== 'zero-plain') {
      throw new BlockIoError('EIO', `qcow2: compressed data can only be written to unallocated clusters (offset ${offset})`);
    }
    await writableL2Table(image, Math.floor(cluster / l2Entries));
    const at = await allocateBytes(image, compressed.length);
    await checkOverlap(image, at, compressed.length);
    return at;
  });
  try {
    await writeFile(image, host, compressed);
  } catch (error) {
    await image.lock.run(async () => queueFree(image, host, compressed.length, 'never'));
    throw error;
  }
  await image.lock.run(() =>
    updateEntries(image, cluster, 1, (_, slice, at) => writeCompressedEntry(slice, at, host, compressed.length, image.g)),
  );
  return true;
}

/**
 * The end of compressed writes (QEMU's zero-length compressed write): the
 * file is extended to a whole sector, as QEMU's truncate to its
 * sector-rounded length does, so the last compressed cluster ends where a
 * sector-based reader expects it.
 */
export async function finishCompressed(image: Qcow2Image): Promise<void> {
  checkUsable(image);
  await image.lock.run(async () => {
    const end = image.growAhead?.end ?? image.file.length;
    const padded = Math.ceil(end / 512) * 512;
    if (padded > end) await growFile(image, padded);
  });
}

/**
 * Writes whole clusters compressed (the image's last, partial cluster too);
 * a cluster that does not compress is stored as is, as QEMU does.
 */
export async function writeCompressedGuest(image: Qcow2Image, offset: number, buf: Buffer): Promise<void> {
  checkUsable(image);
  const cs = image.g.clusterSize;
  if (offset % cs !== 0 || (buf.length % cs !== 0 && offset + buf.length !== image.size)) {
    throw new BlockIoError('EINVAL', 'qcow2: compressed writes must cover whole, aligned clusters');
  }
  const release = await image.ranges.acquire(offset / cs, Math.ceil((offset + buf.length) / cs), true);
  try {
    for (let done = 0; done < buf.length; done += cs) {
      const data = buf.subarray(done, Math.min(buf.length, done + cs));
      if (!(await writeCompressedCluster(image, offset + done, data))) await writeLocked(image, offset + done, data);
    }
  } finally {
    release();
  }
}
