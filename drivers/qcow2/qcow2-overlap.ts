/**
 * Overlap checks (QEMU's qcow2_pre_write_overlap_check): before any write to
 * the file, the clusters it touches must not hold metadata, or a corrupt
 * refcount or L2 entry would let guest data overwrite the image's own
 * structures. A hit marks the image corrupt. `overlap-check` picks the set:
 * constant (header, active L1, refcount table, snapshot table, bitmap
 * directory), cached (+ active L2 tables, refcount blocks, snapshot L1
 * tables), all (+ snapshot L2 tables, read from the snapshot L1 tables).
 */
import { MAX_L1_BYTES, readL1Entry } from './qcow2-format.js';
import { growFile, type Qcow2Image, readFile, signalCorruption, writeFile } from './qcow2-image.js';

/** The structures a write may legitimately target, so their own check is skipped. */
export type OwnMetadata =
  | 'active L1 table'
  | 'active L2 table'
  | 'inactive L1 table'
  | 'inactive L2 table'
  | 'refcount table'
  | 'refcount block'
  | 'bitmap directory';

/** Throws (marking the image corrupt) if `[offset, offset + length)` touches metadata other than `own`. */
export async function checkOverlap(image: Qcow2Image, offset: number, length: number, own?: OwnMetadata): Promise<void> {
  if (image.overlap === 'none' || length <= 0) return;
  const hit = image.overlap === 'all' ? await findOverlap(image, offset, length, own) : cachedOverlap(image, offset, length, own);
  if (hit !== undefined) await signalCorruption(image, `Preventing invalid write on metadata (overlaps with ${hit})`);
}

async function findOverlap(image: Qcow2Image, offset: number, length: number, own?: OwnMetadata): Promise<string | undefined> {
  const hit = cachedOverlap(image, offset, length, own);
  if (hit !== undefined || image.overlap !== 'all' || own === 'inactive L2 table') return hit;
  const cs = image.g.clusterSize;
  const inactive = await inactiveL2Tables(image);
  for (let cluster = Math.floor(offset / cs); cluster < Math.ceil((offset + length) / cs); cluster++) {
    if (inactive.has(cluster)) return 'inactive L2 table';
  }
  return undefined;
}

/**
 * The checks that need no I/O: all of them but the inactive L2 tables of
 * overlap-check=all (fast paths skip that mode). What `[offset, offset +
 * length)` overlaps, or undefined.
 */
export function cachedOverlap(image: Qcow2Image, offset: number, length: number, own?: OwnMetadata): string | undefined {
  if (image.overlap === 'none' || length <= 0) return undefined;
  const cs = image.g.clusterSize;
  const first = Math.floor(offset / cs);
  const end = Math.ceil((offset + length) / cs);
  const hits = (at: number, bytes: number) => bytes > 0 && at < end * cs && first * cs < at + bytes;
  if (first === 0) return 'qcow2_header';
  if (own !== 'active L1 table' && hits(image.l1Offset, image.l1Size * 8)) return 'active L1 table';
  if (own !== 'refcount table' && hits(image.reftableOffset, image.reftableClusters * cs)) return 'refcount table';
  if (hits(image.snapshotsOffset, image.snapshots.byteSize)) return 'snapshot table';
  const bitmaps = image.bitmapDirectory;
  if (own !== 'bitmap directory' && bitmaps !== undefined && hits(bitmaps.offset, bitmaps.size)) return 'bitmap directory';
  if (image.overlap === 'constant') return undefined;
  const kind = metadataIn(image, first, end);
  if (kind === 'l2' && own !== 'active L2 table') return 'active L2 table';
  if (kind === 'refblock' && own !== 'refcount block') return 'refcount block';
  if (own !== 'inactive L1 table' && image.snapshots.l1Tables.some((t) => hits(t.offset, t.size * 8))) return 'inactive L1 table';
  return undefined;
}

/** What the metadata map says about clusters `[first, end)`: walks whichever is smaller. */
function metadataIn(image: Qcow2Image, first: number, end: number): 'l2' | 'refblock' | undefined {
  if (end - first <= image.metadata.size) {
    for (let cluster = first; cluster < end; cluster++) {
      const kind = image.metadata.get(cluster);
      if (kind !== undefined) return kind;
    }
    return undefined;
  }
  for (const [cluster, kind] of image.metadata) if (cluster >= first && cluster < end) return kind;
  return undefined;
}

/** The L2 tables the snapshots' L1 tables point to; tables QEMU would refuse to load are skipped. */
async function inactiveL2Tables(image: Qcow2Image): Promise<Set<number>> {
  if (image.inactiveL2 !== undefined) return image.inactiveL2;
  const clusters = new Set<number>();
  const cs = image.g.clusterSize;
  for (const table of image.snapshots.l1Tables) {
    if (table.offset % cs !== 0 || table.size * 8 > MAX_L1_BYTES) continue;
    const l1 = Buffer.alloc(table.size * 8);
    await readFile(image.file, table.offset, l1);
    for (let at = 0; at < l1.length; at += 8) {
      const entry = readL1Entry(l1, at);
      if (entry.offset !== 0) clusters.add(Math.floor(entry.offset / cs));
    }
  }
  image.inactiveL2 = clusters;
  return clusters;
}

/** Writes metadata (or any non-guest bytes) at `offset` after the overlap check; with the metadata lock held. */
export async function writeMetadata(image: Qcow2Image, offset: number, buf: Buffer, own?: OwnMetadata): Promise<void> {
  await checkOverlap(image, offset, buf.length, own);
  // A table may lie past the end of the file (it then read as zeroes); the file grows to hold it.
  await growFile(image, offset + buf.length);
  await writeFile(image, offset, buf);
}
