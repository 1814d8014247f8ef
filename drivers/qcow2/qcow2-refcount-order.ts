/**
 * A new refcount width for an open v3 image (QEMU's
 * qcow2_change_refcount_order, for qemu-img amend -o refcount_bits), lock
 * held. The old refcounts are walked in cluster order and cut into blocks
 * of the new width: first only to learn which new blocks hold a non-zero
 * count and allocate those (through the old structure, which then counts
 * them too) and a table for them, again until a walk allocates nothing;
 * then once more to write the blocks. The table follows, the header names
 * it and the new width (written whole, flushed), and the old blocks and
 * table are freed through the new structure. A refcount the new width
 * cannot hold stops it before anything is written.
 */
import { BlockLayerError } from '../../core/errors.js';
import { hexAlt } from '../../core/image-tools/qemu-text.js';
import { geometry, MAX_REFTABLE_BYTES, readRefcount, readReftableEntry, writeRefcount, writeReftableEntry } from './qcow2-format.js';
import { type Qcow2Image, writeFile } from './qcow2-image.js';
import { checkOverlap, writeMetadata } from './qcow2-overlap.js';
import { allocateNonZero, applyFrees, writeDirtyRefblocks } from './qcow2-refcount.js';

/** What a walk does with each new block once its counts are known: its index, its bytes (the writing walk, unless all are 0), whether all are 0. */
type FinishBlock = (index: number, block: Buffer | undefined, empty: boolean) => Promise<void>;

/**
 * One walk over every refcount the old structure describes (the table is
 * read afresh at each step: allocations may grow it), in new blocks of
 * `order`'s width; `fill`: the blocks' bytes are built for `finish`.
 */
async function walk(image: Qcow2Image, order: number, fill: boolean, finish: FinishBlock): Promise<void> {
  const { clusterSize: cs, refblockEntries: oldEntries, refcountOrder: oldOrder } = image.g;
  const newBits = 2 ** order;
  const newEntries = (cs * 8) / newBits;
  // Made when a count is not 0: most new blocks of a large, sparse image count nothing.
  let block: Buffer | undefined;
  let index = 0;
  let at = 0;
  let empty = true;
  const next = async (): Promise<void> => {
    await finish(index++, block, empty);
    block = undefined;
    at = 0;
    empty = true;
  };
  for (let i = 0; i < image.reftable.length / 8; i++) {
    const offset = readReftableEntry(image.reftable, i * 8).offset;
    if (offset === 0) {
      // No block: all of its counts are 0, which a new block holds already.
      for (let left = oldEntries; left > 0; ) {
        if (at === newEntries) await next();
        const step = Math.min(left, newEntries - at);
        at += step;
        left -= step;
      }
      continue;
    }
    let old = await image.refcountCache.get(offset);
    for (let j = 0; j < oldEntries; j++) {
      if (at === newEntries) {
        await next();
        // What finish allocated may have changed the block (or the cache may have let it go).
        old = await image.refcountCache.get(offset);
      }
      const count = readRefcount(old, j, oldOrder);
      if (newBits < 64 && count >= 2 ** newBits) {
        throw new BlockLayerError(
          `Cannot decrease refcount entry width to ${newBits} bits: Cluster at offset ${hexAlt((i * oldEntries + j) * cs)} has a refcount of ${count}`,
        );
      }
      if (fill && count !== 0) writeRefcount((block ??= Buffer.alloc(cs)), at, order, count);
      at++;
      empty &&= count === 0;
    }
  }
  if (at > 0) await finish(index, block, empty);
}

/** `writeHeader` writes header cluster 0 from the image's state, switched to the new structure by then. */
export async function changeRefcountOrder(image: Qcow2Image, order: number, writeHeader: () => Promise<void>): Promise<void> {
  const cs = image.g.clusterSize;
  const reftable: number[] = [];
  let allocated: boolean;
  let table: { offset: number; entries: number } | undefined;
  do {
    allocated = false;
    await walk(image, order, false, async (index, _block, empty) => {
      if (empty) return;
      if (index >= reftable.length) {
        const entries = Math.ceil((index + 1) / (cs / 8)) * (cs / 8);
        if (entries * 8 > MAX_REFTABLE_BYTES) {
          throw new BlockLayerError('This operation would make the refcount table grow beyond the maximum size supported by QEMU, aborting');
        }
        while (reftable.length < entries) reftable.push(0);
      }
      if (reftable[index] === 0) {
        reftable[index] = await allocateNonZero(image, 1, 'refcount block');
        allocated = true;
      }
    });
    if (allocated) {
      if (table !== undefined) await freeBytes(image, table.offset, table.entries * 8, 'never');
      table = { offset: await allocateNonZero(image, Math.ceil((reftable.length * 8) / cs), 'refcount table', reftable.length * 8), entries: reftable.length };
    }
  } while (allocated);
  if (table === undefined) throw new BlockLayerError('qcow2: the image has no refcounts to convert');
  await walk(image, order, true, async (index, block, empty) => {
    const offset = reftable[index] ?? 0;
    if (offset === 0) {
      if (!empty) throw new BlockLayerError('qcow2: a refcount block that counts something has no place');
      return;
    }
    await checkOverlap(image, offset, cs);
    await writeFile(image, offset, block ?? Buffer.alloc(cs));
  });
  const buf = Buffer.alloc(reftable.length * 8);
  reftable.forEach((offset, i) => writeReftableEntry(buf, i * 8, offset));
  await writeMetadata(image, table.offset, buf);
  await writeDirtyRefblocks(image);
  const old = { table: image.reftable, offset: image.reftableOffset, clusters: image.reftableClusters };
  image.g = geometry(image.g.clusterBits, order);
  image.reftable = buf;
  image.reftableOffset = table.offset;
  image.reftableClusters = (reftable.length * 8) / cs;
  image.refcountCache.dropRange(0, Number.MAX_SAFE_INTEGER);
  for (const [cluster, kind] of image.metadata) if (kind === 'refblock') image.metadata.delete(cluster);
  for (const offset of reftable) if (offset !== 0) image.metadata.set(offset / cs, 'refblock');
  await writeHeader();
  for (let i = 0; i < old.table.length / 8; i++) {
    const offset = readReftableEntry(old.table, i * 8).offset;
    if (offset !== 0) await freeBytes(image, offset, cs, 'other');
  }
  await freeBytes(image, old.offset, old.clusters * cs, 'other');
}

async function freeBytes(image: Qcow2Image, offset: number, bytes: number, type: 'never' | 'other'): Promise<void> {
  const cs = image.g.clusterSize;
  await applyFrees(image, [{ first: offset / cs, last: Math.floor((offset + bytes - 1) / cs), type }]);
}
