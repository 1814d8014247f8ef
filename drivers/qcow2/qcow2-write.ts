/**
 * Writing guest data (reference §3.5). Under the metadata lock a write is
 * planned: clusters we own (COPIED) are written in place; every other
 * cluster gets a new one, allocated after its L2 table is made writable.
 * The data, with head and tail copied from the old content (backing file,
 * zeroes, compressed or shared cluster), is written without the lock. Then,
 * under the lock again, the L2 entries are pointed at the new clusters and
 * the old references queued for freeing.
 */
import { BlockIoError } from '../../core/errors.js';
import { type L2Entry, writeCompressedEntry, writeL2Entry } from './qcow2-format.js';
import { checkUsable, growFile, type Qcow2Image, readFile, writeFile } from './qcow2-image.js';
import { compressCluster } from './qcow2-compress.js';
import { entryOf, forEachEntry, updateEntries, writableL2Table } from './qcow2-l1-l2.js';
import { checkOverlap } from './qcow2-overlap.js';
import { readBacking, readCompressed } from './qcow2-read.js';
import { allocateBytes, allocateNonZero, queueFree } from './qcow2-refcount.js';
import { prepareForWrite, prepareMetadataChange, syncIfFreesPile } from './qcow2-sync.js';

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
interface Allocation {
  kind: 'alloc';
  first: number;
  count: number;
  host: number;
  old: L2Entry[];
}

type Piece = InPlace | ReuseZero | Allocation;

function owned(entry: L2Entry): boolean {
  return (entry.kind === 'normal' || entry.kind === 'zero-alloc') && entry.copied;
}

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
      pieces.push({ kind: 'alloc', first: cluster, count, host, old: entries.slice(i, i + count) });
      i += count;
    }
  }
  return pieces;
}

/** What a cluster reads as before this write, for the parts the write leaves alone. */
async function oldContent(image: Qcow2Image, cluster: number, entry: L2Entry): Promise<Buffer> {
  const cs = image.g.clusterSize;
  const buf = Buffer.alloc(cs);
  if (entry.kind === 'unallocated') await readBacking(image, cluster * cs, buf);
  else if (entry.kind === 'compressed') return readCompressed(image, entry);
  else if (entry.kind === 'normal') await readFile(image.file, entry.host, buf);
  return buf;
}

/** Writes one piece's data (no lock): whole clusters straight from `buf`, partial ones merged with their old content. */
async function writePiece(image: Qcow2Image, piece: Piece, offset: number, buf: Buffer): Promise<void> {
  const cs = image.g.clusterSize;
  const end = offset + buf.length;
  const slice = (from: number, to: number) => buf.subarray(from - offset, to - offset);
  if (piece.kind === 'in-place') {
    await writeFile(image, piece.host, slice(piece.offset, piece.offset + piece.length));
    return;
  }
  if (piece.kind === 'reuse-zero') {
    const cluster = Buffer.alloc(cs);
    const from = Math.max(offset, piece.cluster * cs);
    slice(from, Math.min(end, (piece.cluster + 1) * cs)).copy(cluster, from - piece.cluster * cs);
    await writeFile(image, piece.host, cluster);
    return;
  }
  let wholeFrom = -1;
  for (let j = 0; j <= piece.count; j++) {
    const cluster = piece.first + j;
    const whole = j < piece.count && offset <= cluster * cs && end >= (cluster + 1) * cs;
    if (whole && wholeFrom < 0) wholeFrom = j;
    if (whole) continue;
    if (wholeFrom >= 0) {
      await writeFile(image, piece.host + wholeFrom * cs, slice((piece.first + wholeFrom) * cs, cluster * cs));
      wholeFrom = -1;
    }
    if (j === piece.count) break;
    const content = await oldContent(image, cluster, piece.old[j]!);
    const from = Math.max(offset, cluster * cs);
    slice(from, Math.min(end, (cluster + 1) * cs)).copy(content, from - cluster * cs);
    await writeFile(image, piece.host + j * cs, content);
  }
}

/** Points the L2 entries at the written clusters and queues the old references (lock held). */
async function linkPieces(image: Qcow2Image, pieces: Piece[]): Promise<void> {
  const cs = image.g.clusterSize;
  for (const piece of pieces) {
    if (piece.kind === 'reuse-zero') {
      await updateEntries(image, piece.cluster, 1, (_, slice, at) => writeL2Entry(slice, at, piece.host, true, false));
    } else if (piece.kind === 'alloc') {
      await updateEntries(image, piece.first, piece.count, (cluster, slice, at) =>
        writeL2Entry(slice, at, piece.host + (cluster - piece.first) * cs, true, false),
      );
      for (const old of piece.old) {
        if (old.kind === 'normal' || old.kind === 'zero-alloc') queueFree(image, old.host, cs, 'never');
        else if (old.kind === 'compressed') queueFree(image, old.host, old.compressedLength, 'never');
      }
    }
  }
  await syncIfFreesPile(image);
}

/** Writes guest data; the caller holds the range lock of the clusters. */
export async function writeLocked(image: Qcow2Image, offset: number, buf: Buffer): Promise<void> {
  const pieces = await image.lock.run(() => planWrite(image, offset, buf.length));
  try {
    await Promise.all(pieces.map((piece) => writePiece(image, piece, offset, buf)));
  } catch (error) {
    // Clusters allocated for this write were never published: give them back.
    await image.lock.run(async () => {
      for (const p of pieces) if (p.kind === 'alloc') queueFree(image, p.host, p.count * image.g.clusterSize, 'never');
    });
    throw error;
  }
  await image.lock.run(() => linkPieces(image, pieces));
}

/** Writes guest data, excluding other requests on the same clusters. */
export async function writeGuest(image: Qcow2Image, offset: number, buf: Buffer): Promise<void> {
  checkUsable(image);
  const cs = image.g.clusterSize;
  const release = await image.ranges.acquire(Math.floor(offset / cs), Math.ceil((offset + buf.length) / cs), true);
  try {
    await writeLocked(image, offset, buf);
  } finally {
    release();
  }
}

/** Stores one compressed cluster at `offset` (range lock held); false if it must be stored as is. */
async function writeCompressedCluster(image: Qcow2Image, offset: number, data: Buffer): Promise<boolean> {
  const { clusterSize: cs, l2Entries } = image.g;
  const padded = data.length === cs ? data : Buffer.concat([data, Buffer.alloc(cs - data.length)]);
  const compressed = await compressCluster(padded);
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
