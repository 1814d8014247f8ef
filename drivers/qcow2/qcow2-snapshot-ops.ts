/**
 * Internal snapshots made, applied and deleted as QEMU 7.2's
 * block/qcow2-snapshot.c does, step for step, so that the file comes out
 * as qemu-img snapshot leaves it:
 *
 * - create: the active L1 table copied to new clusters, every cluster it
 *   reaches gaining a reference (COPIED cleared on the active tables), then
 *   the snapshot table rewritten with the new entry;
 * - apply (goto): the snapshot's clusters gain a reference, its L1 table
 *   overwrites the active one, the old active clusters lose one, and
 *   COPIED is recomputed;
 * - delete: the entry leaves the table first, then the snapshot's clusters
 *   lose a reference and its L1 table is freed.
 *
 * A crash at any point leaves at worst leaked clusters: refcounts go up
 * before anything points at them, and down only once nothing on disk does
 * (COPIED flags may lag behind for a moment, on clusters nothing else
 * refers to yet or any more: test/drivers/qcow2/snapshot-crash.test.ts).
 * One write differs from QEMU's on the way, not in the end: applying a
 * snapshot writes its L1 table over the active one without the COPIED
 * flags its copy kept from creation, which would otherwise let a write
 * after a crash there change a table the snapshot shares. The whole image
 * is held (no guest request runs meanwhile).
 */
import type { NewSnapshotInfo, SnapshotInfo } from '../../core/block/driver.js';
import { BlockIoError } from '../../core/errors.js';
import { hex, MAX_L1_BYTES, MAX_SNAPSHOTS, readL2Entry } from './qcow2-format.js';
import { checkUsable, flushFile, type Qcow2Image, readFile, signalCorruption, writeHeaderField } from './qcow2-image.js';
import { writeMetadata } from './qcow2-overlap.js';
import { adjustRefcounts, allocateClusters, applyFrees, getRefcount } from './qcow2-refcount.js';
import { type SnapshotEntry, serializeSnapshotTable, snapshotTable, snapshotTableSize } from './qcow2-snapshots.js';
import { prepareMetadataChange, syncMetadata, withWholeImage } from './qcow2-sync.js';
import { growL1 } from './qcow2-truncate.js';

const COPIED = 1n << 63n;
/** The longest name a new snapshot keeps, in bytes. */
const MAX_NAME_BYTES = 255;
/** nb_snapshots, then snapshots_offset, in the header. */
const HEADER_SNAPSHOTS_OFFSET = 60;

/** One reference more (+1) or less (-1) on every cluster `[offset, offset + length)` touches. */
async function addReference(image: Qcow2Image, offset: number, length: number, addend: 1 | -1): Promise<void> {
  const cs = image.g.clusterSize;
  const first = Math.floor(offset / cs);
  const last = Math.floor((offset + length - 1) / cs);
  if (addend > 0) await adjustRefcounts(image, first, last - first + 1, 1);
  else await applyFrees(image, [{ first, last, type: 'snapshot' }]);
}

/**
 * QEMU's qcow2_update_snapshot_refcount: every cluster the L1 table at
 * `l1Offset` reaches (its L2 tables, their data and compressed clusters)
 * gains `addend` references, and COPIED is set on the entries whose
 * cluster is then referenced once, cleared on the others. The active table
 * is taken from memory. With the lock held.
 */
async function updateSnapshotRefcount(image: Qcow2Image, l1Offset: number, l1Size: number, addend: -1 | 0 | 1): Promise<void> {
  const active = l1Offset === image.l1Offset;
  const l1 = active ? image.l1 : Buffer.alloc(l1Size * 8);
  if (!active) await readFile(image.file, l1Offset, l1);
  const l1Modified = await updateReferences(image, l1, l1Size, addend);
  await syncMetadata(image);
  await flushFile(image);
  // A table whose references were all dropped is about to go: QEMU does not write it back.
  if (addend >= 0 && l1Modified) {
    await writeMetadata(image, l1Offset, l1, active ? 'active L1 table' : 'inactive L1 table');
    await flushFile(image);
  }
}

/** updateSnapshotRefcount's walk over the tables, `l1` edited in memory; whether it changed. */
async function updateReferences(image: Qcow2Image, l1: Buffer, l1Size: number, addend: -1 | 0 | 1): Promise<boolean> {
  const cs = image.g.clusterSize;
  const sliceBytes = image.l2SliceEntries * 8;
  let l1Modified = false;
  for (let i = 0; i < l1Size; i++) {
    const oldL1 = l1.readBigUInt64BE(i * 8);
    const l2Offset = Number(oldL1 & 0x00fffffffffffe00n);
    if (oldL1 === 0n) continue;
    if (l2Offset % cs !== 0) await signalCorruption(image, `L2 table offset ${hex(l2Offset)} unaligned (L1 index: ${hex(i)})`);
    for (let sliceStart = 0; sliceStart < cs; sliceStart += sliceBytes) {
      const sliceOffset = l2Offset + sliceStart;
      const slice = await image.l2Cache.get(sliceOffset);
      for (let at = 0; at < sliceBytes; at += 8) {
        const old = slice.readBigUInt64BE(at);
        const entry = readL2Entry(slice, at, image.g, image.version);
        let refcount = 0;
        if (entry.kind === 'compressed') {
          if (addend !== 0) await addReference(image, entry.host, entry.compressedLength, addend);
          // Compressed clusters are never changed in place.
          refcount = 2;
        } else if (entry.kind === 'normal' || entry.kind === 'zero-alloc') {
          if (entry.host % cs !== 0) {
            const index = (sliceStart + at) / 8;
            await signalCorruption(image, `Cluster allocation offset ${hex(entry.host)} unaligned (L2 offset: ${hex(l2Offset)}, L2 index: ${hex(index)})`);
          }
          if (addend !== 0) await addReference(image, entry.host, cs, addend);
          refcount = await getRefcount(image, entry.host / cs);
        }
        const updated = refcount === 1 ? old | COPIED : old & ~COPIED;
        // The slice stays cached meanwhile: only lookups in the L2 cache evict, and refcount updates make none.
        if (updated !== old) {
          slice.writeBigUInt64BE(updated, at);
          image.l2Cache.markDirty(sliceOffset);
        }
      }
    }
    if (addend !== 0) await addReference(image, l2Offset, cs, addend);
    const refcount = await getRefcount(image, l2Offset / cs);
    const updated = refcount === 1 ? oldL1 | COPIED : oldL1 & ~COPIED;
    if (updated !== oldL1) {
      l1.writeBigUInt64BE(updated, i * 8);
      l1Modified = true;
    }
  }
  return l1Modified;
}

/**
 * QEMU's qcow2_write_snapshots: the table written to new clusters, then
 * nb_snapshots and snapshots_offset in the header, each flushed, then the
 * old table freed. An empty table takes no cluster; the header still
 * records where it would begin, as QEMU's.
 */
async function writeSnapshots(image: Qcow2Image, entries: SnapshotEntry[]): Promise<void> {
  const cs = image.g.clusterSize;
  const size = snapshotTableSize(entries);
  const offset = size === 0 ? image.freeClusterIndex * cs : await allocateClusters(image, Math.ceil(size / cs), size);
  await syncMetadata(image);
  await flushFile(image);
  if (size > 0) await writeMetadata(image, offset, serializeSnapshotTable(entries));
  await flushFile(image);
  const field = Buffer.alloc(12);
  field.writeUInt32BE(entries.length, 0);
  field.writeBigUInt64BE(BigInt(offset), 4);
  await writeHeaderField(image, HEADER_SNAPSHOTS_OFFSET, field);
  const old = { offset: image.snapshotsOffset, size: image.snapshots.byteSize };
  image.snapshotsOffset = offset;
  image.snapshots = snapshotTable(entries, size);
  image.inactiveL2 = undefined;
  if (old.size > 0) await addReference(image, old.offset, old.size, -1);
  await syncMetadata(image);
}

/** The snapshot table written again as QEMU writes it (v3 extra data for every entry), lock held: amend's upgrade. */
export function rewriteSnapshotTable(image: Qcow2Image): Promise<void> {
  return writeSnapshots(image, [...image.snapshots.entries]);
}

/** find_new_snapshot_id: one more than the largest id read as a number. */
function newSnapshotId(entries: readonly SnapshotEntry[]): string {
  let max = 0n;
  for (const e of entries) {
    const id = /^\d+/.exec(e.id)?.[0];
    if (id !== undefined && BigInt(id) > max) max = BigInt(id);
  }
  return String(max + 1n);
}

/** Runs `body` with the whole image to itself and the metadata lock, the image ready for metadata changes. */
function exclusively<T>(image: Qcow2Image, body: () => Promise<T>): Promise<T> {
  return withWholeImage(image, async () => {
    await prepareMetadataChange(image);
    return body();
  });
}

export function createSnapshot(image: Qcow2Image, snapshot: NewSnapshotInfo): Promise<SnapshotInfo> {
  return exclusively(image, async () => {
    const entries = image.snapshots.entries;
    if (entries.length >= MAX_SNAPSHOTS) throw new BlockIoError('EFBIG');
    await syncMetadata(image);
    const bytes = image.l1Size * 8;
    const l1Offset = bytes === 0 ? image.freeClusterIndex * image.g.clusterSize : await allocateClusters(image, Math.ceil(bytes / image.g.clusterSize), bytes);
    // The active table as it is in memory, COPIED flags included (QEMU copies them too).
    if (bytes > 0) await writeMetadata(image, l1Offset, Buffer.from(image.l1));
    await updateSnapshotRefcount(image, image.l1Offset, image.l1Size, 1);
    const id = newSnapshotId(entries);
    // QEMUSnapshotInfo holds a name of at most 255 bytes (pstrcpy cuts it there).
    const rawName = Buffer.from(snapshot.name).subarray(0, MAX_NAME_BYTES);
    const entry: SnapshotEntry = {
      l1Offset: BigInt(l1Offset),
      l1Size: image.l1Size,
      id,
      name: rawName.toString('utf8'),
      rawId: Buffer.from(id),
      rawName,
      vmStateSize: snapshot.vmStateSize ?? 0n,
      dateSec: snapshot.dateSec,
      dateNsec: snapshot.dateNsec,
      vmClockNsec: snapshot.vmClockNsec ?? 0n,
      extraDataSize: 24,
      diskSize: BigInt(image.size),
      // Unsigned, as on disk: -1 is none.
      icount: BigInt.asUintN(64, snapshot.icount ?? 0n),
      unknownExtra: Buffer.alloc(0),
    };
    await writeSnapshots(image, [...entries, entry]);
    return image.snapshots.infos[image.snapshots.infos.length - 1]!;
  });
}

/** find_snapshot_by_id_or_name: an id first, then a name. */
function findByIdOrName(image: Qcow2Image, idOrName: string): number {
  const entries = image.snapshots.entries;
  const byId = entries.findIndex((e) => e.id === idOrName);
  return byId >= 0 ? byId : entries.findIndex((e) => e.name === idOrName);
}

/** qcow2_validate_table for a snapshot's L1 table. */
function checkSnapshotL1(image: Qcow2Image, entry: SnapshotEntry): number {
  if (entry.l1Size * 8 > MAX_L1_BYTES) throw new BlockIoError('EFBIG', 'Snapshot L1 table too large');
  const offset = entry.l1Offset;
  if (offset % BigInt(image.g.clusterSize) !== 0n || offset + BigInt(entry.l1Size * 8) > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new BlockIoError('EINVAL', 'Snapshot L1 table offset invalid');
  }
  return Number(offset);
}

/** Makes the snapshot `idOrName` (an id, else a name) the image's content (qcow2_snapshot_goto). */
export function gotoSnapshot(image: Qcow2Image, idOrName: string): Promise<void> {
  return exclusively(image, async () => {
    const index = findByIdOrName(image, idOrName);
    if (index < 0) throw new BlockIoError('ENOENT');
    const entry = image.snapshots.entries[index]!;
    const snapshotL1 = checkSnapshotL1(image, entry);
    if (entry.diskSize !== BigInt(image.size)) {
      throw new BlockIoError('ENOTSUP', `qcow2: the snapshot's disk size (${entry.diskSize}) differs from the image's (${image.size})`);
    }
    if (entry.l1Size > image.l1Size) await growL1(image, entry.l1Size);
    await syncMetadata(image);
    const table = Buffer.alloc(image.l1Size * 8);
    await readFile(image.file, snapshotL1, table.subarray(0, entry.l1Size * 8));
    // The copy made at creation kept the COPIED flags of then; the tables are shared now, so none goes to disk
    // (QEMU writes them, and a crash before the flags are recomputed below would let a write change a table the
    // snapshot shares; the flags written at the end are the same either way).
    for (let at = 0; at < table.length; at += 8) table.writeBigUInt64BE(table.readBigUInt64BE(at) & ~COPIED, at);
    await updateSnapshotRefcount(image, snapshotL1, entry.l1Size, 1);
    await writeMetadata(image, image.l1Offset, table, 'active L1 table');
    await flushFile(image);
    // The in-memory table is still the old one: its clusters lose the reference the disk no longer holds.
    await updateSnapshotRefcount(image, image.l1Offset, image.l1Size, -1);
    table.copy(image.l1);
    image.l1Dirty = undefined;
    await updateSnapshotRefcount(image, image.l1Offset, image.l1Size, 0);
    refreshActiveL2(image);
  });
}

/**
 * qcow2_snapshot_load_tmp: a read-only image reads the snapshot with this
 * id and/or name from now on (its L1 table is made the active one in
 * memory; nothing is written, the size stays the image's).
 */
export function loadSnapshotTmp(image: Qcow2Image, id: string | undefined, name: string | undefined): Promise<void> {
  return image.lock.run(async () => {
    checkUsable(image);
    const entry = image.snapshots.entries.find((e) => (id === undefined || e.id === id) && (name === undefined || e.name === name));
    if (entry === undefined) throw new BlockIoError('ENOENT', "Can't find snapshot");
    const offset = checkSnapshotL1(image, entry);
    // Never shorter than the image needs: entries past the snapshot's read as unallocated, as QEMU's past its l1_size.
    const table = Buffer.alloc(Math.max(entry.l1Size, image.l1Size) * 8);
    await readFile(image.file, offset, table.subarray(0, entry.l1Size * 8));
    image.l1 = table;
    image.l1Size = table.length / 8;
    image.l1Offset = offset;
    refreshActiveL2(image);
  });
}

/** The metadata map's active L2 tables, after the active L1 table was replaced. */
function refreshActiveL2(image: Qcow2Image): void {
  const cs = image.g.clusterSize;
  for (const [cluster, kind] of image.metadata) if (kind === 'l2') image.metadata.delete(cluster);
  for (let i = 0; i < image.l1Size; i++) {
    const offset = Number(image.l1.readBigUInt64BE(i * 8) & 0x00fffffffffffe00n);
    if (offset !== 0) image.metadata.set(offset / cs, 'l2');
  }
  image.inactiveL2 = undefined;
}

/**
 * Deletes the snapshot with this id and/or name (qcow2_snapshot_delete):
 * the entry leaves the table, then its clusters lose a reference and its
 * L1 table is freed; COPIED is recomputed on the active tables.
 */
export function deleteSnapshot(image: Qcow2Image, id: string | undefined, name: string | undefined): Promise<void> {
  return exclusively(image, async () => {
    const entries = image.snapshots.entries;
    const index = entries.findIndex((e) => (id === undefined || e.id === id) && (name === undefined || e.name === name));
    if (index < 0) throw new BlockIoError('ENOENT', `Can't find the snapshot`);
    const entry = entries[index]!;
    const snapshotL1 = checkSnapshotL1(image, entry);
    await writeSnapshots(image, entries.filter((_, i) => i !== index));
    await updateSnapshotRefcount(image, snapshotL1, entry.l1Size, -1);
    if (entry.l1Size > 0) await addReference(image, snapshotL1, entry.l1Size * 8, -1);
    await updateSnapshotRefcount(image, image.l1Offset, image.l1Size, 0);
  });
}
