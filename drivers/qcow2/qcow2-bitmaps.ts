/**
 * Persistent dirty bitmaps: the bitmaps extension (reference §5.2, QEMU's
 * block/qcow2-bitmap.c). The extension points to a directory of entries
 * (table offset and size, flags, granularity, name); each bitmap's table
 * holds one entry per cluster of its bits: a data cluster, or 0 for a
 * cluster of zero bits.
 *
 * - Open (loadBitmaps): every bitmap is read. One marked in use was not
 *   stored after its last change (its image was not closed cleanly) and is
 *   loaded as inconsistent, without its bits. On a writable image every
 *   bitmap is then marked in use, in the directory as it stands, and the
 *   file flushed: a crash from here on leaves them inconsistent, never
 *   stale.
 * - Close (storeBitmaps): the bits go to new clusters, then new tables,
 *   then a new directory; refcounts and all these reach the disk before
 *   the header points at the new directory, and the old clusters are
 *   freed only after (a crash leaves leaks at worst). Inconsistent
 *   bitmaps keep their entries as they are; entries of bitmaps no longer
 *   there are dropped, if they were loaded.
 * - Removal (removeStoredBitmap): a new directory without the bitmap, at
 *   once, as QEMU removes a persistent bitmap.
 * - Without loadBitmaps, a writable image keeps QEMU's other choice: the
 *   first write clears autoclear bit 0, and QEMU then ignores the bitmaps.
 */
import type { StoredBitmap } from '../../core/block/driver.js';
import { BlockLayerError } from '../../core/errors.js';
import { HEADER_AUTOCLEAR_OFFSET, readL1Entry } from './qcow2-format.js';
import { headerWithBacking, MAX_BITMAP_DIRECTORY_SIZE, MAX_BITMAPS, readFixedHeader } from './qcow2-header.js';
import { checkUsable, flushFile, type Qcow2Image, readFile, writeFile } from './qcow2-image.js';
import { writeMetadata } from './qcow2-overlap.js';
import { allocateNonZero, queueFree, writeDirtyRefblocks } from './qcow2-refcount.js';
import { syncMetadata } from './qcow2-sync.js';

const FLAG_IN_USE = 1;
const FLAG_AUTO = 2;
const TYPE_DIRTY_TRACKING = 1;
const ENTRY_HEADER = 24;
/** QEMU's BME_MAX_TABLE_SIZE and BME_MAX_PHYS_SIZE (bits kept in memory). */
const MAX_TABLE_ENTRIES = 0x8000000;
const MAX_BITMAP_BYTES = 0x20000000;
/** What all the bitmaps of one image may take in memory together: a directory of many large ones is refused, not loaded. */
const MAX_TOTAL_BITMAP_BYTES = 0x40000000;
const MAX_NAME = 1023;
const MIN_GRANULARITY_BITS = 9;
const MAX_GRANULARITY_BITS = 31;

/** A directory entry as the image stores it. */
export interface BitmapEntry {
  name: string;
  flags: number;
  granularityBits: number;
  tableOffset: number;
  tableSize: number;
}

/** The entries of directory `dir`, checked as QEMU's bitmap_list_load checks them; `name` names the image in errors. */
export function parseBitmapDirectory(dir: Buffer, clusterSize: number, name: string): BitmapEntry[] {
  const entries: BitmapEntry[] = [];
  const refuse = (why: string): never => {
    throw new BlockLayerError(`qcow2: bitmap directory of '${name}' is broken: ${why}`);
  };
  for (let at = 0; at < dir.length; ) {
    if (at + ENTRY_HEADER > dir.length) refuse(`entry ${entries.length} is cut short`);
    const nameSize = dir.readUInt16BE(at + 18);
    const extraSize = dir.readUInt32BE(at + 20);
    const next = at + Math.ceil((ENTRY_HEADER + extraSize + nameSize) / 8) * 8;
    if (next > dir.length) refuse(`entry ${entries.length} runs past the directory`);
    const entry: BitmapEntry = {
      name: dir.toString('utf8', at + ENTRY_HEADER + extraSize, at + ENTRY_HEADER + extraSize + nameSize),
      flags: dir.readUInt32BE(at + 12),
      granularityBits: dir[at + 17]!,
      tableOffset: Number(dir.readBigUInt64BE(at)),
      tableSize: dir.readUInt32BE(at + 8),
    };
    const label = `bitmap '${entry.name}'`;
    if (extraSize !== 0) refuse(`${label} has extra data, which is not supported`);
    if (dir[at + 16] !== TYPE_DIRTY_TRACKING) refuse(`${label} is of unknown type ${dir[at + 16]}`);
    if ((entry.flags & ~(FLAG_IN_USE | FLAG_AUTO)) !== 0) refuse(`${label} has unknown flags 0x${entry.flags.toString(16)}`);
    if (nameSize === 0 || nameSize > MAX_NAME) refuse(`entry ${entries.length} has a name of ${nameSize} bytes`);
    if (entry.granularityBits < MIN_GRANULARITY_BITS || entry.granularityBits > MAX_GRANULARITY_BITS) {
      refuse(`${label} has granularity bits ${entry.granularityBits}`);
    }
    if (entry.tableOffset % clusterSize !== 0 || entry.tableSize === 0 || entry.tableSize > MAX_TABLE_ENTRIES) {
      refuse(`${label} has a table of ${entry.tableSize} entries at ${entry.tableOffset}`);
    }
    if (entries.some((e) => e.name === entry.name)) refuse(`${label} is listed twice`);
    entries.push(entry);
    at = next;
  }
  return entries;
}

/** Bytes of bits a bitmap of `granularity` over `size` bytes has. */
function bitBytes(size: number, granularity: number): number {
  return Math.ceil(Math.ceil(size / granularity) / 8);
}

/** A table entry that is broken: reserved bits, an unaligned offset, or the all-ones flag (check_table_entry). */
export function badTableEntry(table: Buffer, at: number, clusterSize: number): boolean {
  const h = table.readUInt32BE(at);
  const l = table.readUInt32BE(at + 4);
  if ((h & 0xff000000) !== 0 || (l & 0x1fe) !== 0) return true;
  const offset = readL1Entry(table, at).offset;
  return offset !== 0 && ((l & 1) !== 0 || offset % clusterSize !== 0);
}

async function readDirectory(image: Qcow2Image): Promise<BitmapEntry[]> {
  const dir = image.bitmapDirectory;
  // Without autoclear bit 0 the directory is stale: QEMU ignores it.
  if (dir === undefined || (image.autoclear & 1n) === 0n) return [];
  const buf = Buffer.alloc(dir.size);
  await readFile(image.file, dir.offset, buf);
  return parseBitmapDirectory(buf, image.g.clusterSize, image.name);
}

/** The bits of `entry`, read through its table (load_bitmap_data). */
async function readBits(image: Qcow2Image, entry: BitmapEntry): Promise<Buffer> {
  const cs = image.g.clusterSize;
  const granularity = 2 ** entry.granularityBits;
  const bytes = bitBytes(image.size, granularity);
  if (bytes > MAX_BITMAP_BYTES || entry.tableSize !== Math.ceil(bytes / cs)) {
    throw new BlockLayerError(`qcow2: bitmap '${entry.name}' of '${image.name}' does not match the image size`);
  }
  const table = Buffer.alloc(entry.tableSize * 8);
  await readFile(image.file, entry.tableOffset, table);
  const bits = Buffer.alloc(bytes);
  const cluster = Buffer.alloc(cs);
  for (let i = 0; i < entry.tableSize; i++) {
    if (badTableEntry(table, i * 8, cs)) {
      throw new BlockLayerError(`qcow2: bitmap '${entry.name}' of '${image.name}' has a broken table entry ${i}`);
    }
    const offset = readL1Entry(table, i * 8).offset;
    if (offset === 0) continue;
    if (offset + cs > image.file.length) {
      throw new BlockLayerError(`qcow2: bitmap '${entry.name}' of '${image.name}' points past the end of the file`);
    }
    await readFile(image.file, offset, cluster);
    cluster.copy(bits, i * cs, 0, Math.min(cs, bytes - i * cs));
  }
  return bits;
}

function entryBytes(name: string): number {
  return Math.ceil((ENTRY_HEADER + Buffer.byteLength(name, 'utf8')) / 8) * 8;
}

function buildDirectory(entries: readonly BitmapEntry[]): Buffer {
  const dir = Buffer.alloc(entries.reduce((sum, e) => sum + entryBytes(e.name), 0));
  let at = 0;
  for (const e of entries) {
    dir.writeBigUInt64BE(BigInt(e.tableOffset), at);
    dir.writeUInt32BE(e.tableSize, at + 8);
    dir.writeUInt32BE(e.flags, at + 12);
    dir[at + 16] = TYPE_DIRTY_TRACKING;
    dir[at + 17] = e.granularityBits;
    dir.writeUInt16BE(Buffer.byteLength(e.name, 'utf8'), at + 18);
    dir.write(e.name, at + ENTRY_HEADER, 'utf8');
    at += entryBytes(e.name);
  }
  return dir;
}

/** qemu-img info's `bitmaps` (Qcow2BitmapInfo): flags, name and granularity in the directory's order; undefined without any. */
export async function bitmapInfo(image: Qcow2Image): Promise<{ flags: string[]; name: string; granularity: number }[] | undefined> {
  const entries = await readDirectory(image);
  if (entries.length === 0) return undefined;
  return entries.map((e) => ({
    flags: [...((e.flags & FLAG_IN_USE) !== 0 ? ['in-use'] : []), ...((e.flags & FLAG_AUTO) !== 0 ? ['auto'] : [])],
    name: e.name,
    granularity: 2 ** e.granularityBits,
  }));
}

/**
 * The image's bitmaps. On a writable image those not yet in use are
 * marked so in the directory, in place, and flushed (QEMU's
 * qcow2_load_dirty_bitmaps).
 */
export async function loadBitmaps(image: Qcow2Image): Promise<StoredBitmap[]> {
  checkUsable(image);
  // A check reads the directory itself, and must open images whose bitmaps would not load.
  if (image.forCheck) return [];
  return image.lock.run(async () => {
    const entries = await readDirectory(image);
    const total = entries.reduce((sum, e) => sum + ((e.flags & FLAG_IN_USE) !== 0 ? 0 : bitBytes(image.size, 2 ** e.granularityBits)), 0);
    if (total > MAX_TOTAL_BITMAP_BYTES) {
      throw new BlockLayerError(`qcow2: the bitmaps of '${image.name}' would take ${total} bytes of memory, more than ${MAX_TOTAL_BITMAP_BYTES}`);
    }
    const loaded: StoredBitmap[] = [];
    for (const entry of entries) {
      const inUse = (entry.flags & FLAG_IN_USE) !== 0;
      loaded.push({
        name: entry.name,
        granularity: 2 ** entry.granularityBits,
        enabled: (entry.flags & FLAG_AUTO) !== 0,
        inconsistent: inUse,
        bits: inUse ? undefined : await readBits(image, entry),
      });
    }
    await markInUse(image, entries);
    return loaded;
  });
}

/** On a writable image: every bitmap marked in use, in the directory as it stands, and flushed. With the lock held. */
async function markInUse(image: Qcow2Image, entries: BitmapEntry[]): Promise<void> {
  if (!image.writable || entries.length === 0) return;
  if (entries.some((e) => (e.flags & FLAG_IN_USE) === 0)) {
    for (const e of entries) e.flags |= FLAG_IN_USE;
    await writeMetadata(image, image.bitmapDirectory!.offset, buildDirectory(entries), 'bitmap directory');
    await flushFile(image);
  }
  image.bitmapsInUse = true;
}

/** A read-only image turned writable (QEMU's qcow2_reopen_bitmaps_rw): its bitmaps marked in use, their bits not read again. */
export async function markBitmapsInUse(image: Qcow2Image): Promise<void> {
  checkUsable(image);
  if (image.forCheck) return;
  await image.lock.run(async () => markInUse(image, await readDirectory(image)));
}

/**
 * Why a new bitmap `name` cannot be stored here (QEMU's
 * qcow2_co_can_store_new_dirty_bitmap), or undefined. `count` is the
 * number of persistent bitmaps the node has already. A read-only image is
 * no reason, as in QEMU: such a bitmap is lost when the node closes.
 */
export function bitmapStoreRefusal(image: Qcow2Image, name: string, granularity: number, count: number): string | undefined {
  if (image.version < 3) return 'Cannot store dirty bitmaps in qcow2 v2 files';
  if (count >= MAX_BITMAPS) return 'Maximum number of persistent bitmaps is already reached';
  if (bitBytes(image.size, granularity) > MAX_BITMAP_BYTES) return 'Too large bitmap';
  return undefined;
}

/** Writes the bits of one bitmap to new clusters and a new table; returns the table's offset and size. */
async function writeBits(image: Qcow2Image, bits: Buffer): Promise<{ tableOffset: number; tableSize: number }> {
  const cs = image.g.clusterSize;
  const tableSize = Math.max(1, Math.ceil(bits.length / cs));
  const table = Buffer.alloc(tableSize * 8);
  const zeroes = Buffer.alloc(cs);
  // One cluster buffer for all: each write completes before the next fills it.
  const cluster = Buffer.alloc(cs);
  for (let i = 0; i < tableSize; i++) {
    const part = bits.subarray(i * cs, (i + 1) * cs);
    if (part.equals(zeroes.subarray(0, part.length))) continue;
    const offset = await allocateNonZero(image, 1, 'bitmap data');
    cluster.fill(0, part.copy(cluster));
    await writeMetadata(image, offset, cluster);
    table.writeBigUInt64BE(BigInt(offset), i * 8);
  }
  const tableOffset = await allocateNonZero(image, Math.ceil(table.length / cs), 'bitmap table', table.length);
  await writeMetadata(image, tableOffset, table);
  return { tableOffset, tableSize };
}

/** Queues the frees of an entry's table and data clusters (free_bitmap_clusters: the data discarded in the file always). */
async function queueEntryFrees(image: Qcow2Image, entry: BitmapEntry): Promise<void> {
  const table = Buffer.alloc(entry.tableSize * 8);
  await readFile(image.file, entry.tableOffset, table);
  for (let at = 0; at < table.length; at += 8) {
    const offset = readL1Entry(table, at).offset;
    if (offset !== 0) queueFree(image, offset, image.g.clusterSize, 'always');
  }
  queueFree(image, entry.tableOffset, table.length, 'other');
}

/** Points the header at directory `dir` (none: the extension goes and autoclear bit 0 with it), then flushes. */
async function writeHeaderBitmaps(image: Qcow2Image, dir: { offset: number; size: number; count: number } | undefined): Promise<void> {
  const cluster0 = Buffer.alloc(image.g.clusterSize);
  await readFile(image.file, 0, cluster0);
  const autoclear = dir === undefined ? image.autoclear & ~1n : image.autoclear | 1n;
  cluster0.writeBigUInt64BE(autoclear, HEADER_AUTOCLEAR_OFFSET);
  let extension: Buffer | undefined;
  if (dir !== undefined) {
    extension = Buffer.alloc(24);
    extension.writeUInt32BE(dir.count, 0);
    extension.writeBigUInt64BE(BigInt(dir.size), 8);
    extension.writeBigUInt64BE(BigInt(dir.offset), 16);
  }
  const backing = { name: image.backingName, format: image.backingFormat };
  await writeFile(image, 0, headerWithBacking(cluster0, readFixedHeader(cluster0), backing, { bitmaps: extension }));
  await flushFile(image);
  image.autoclear = autoclear;
  image.bitmapDirectory = dir === undefined ? undefined : { offset: dir.offset, size: dir.size };
}

/**
 * Stores `bitmaps` as the image's bitmaps, not in use (QEMU's
 * qcow2_store_persistent_dirty_bitmaps): inconsistent ones keep their
 * entries, entries of bitmaps not given are dropped.
 */
export async function storeBitmaps(image: Qcow2Image, bitmaps: readonly StoredBitmap[]): Promise<void> {
  // Nothing loaded, nothing new: the image stays as it is.
  if (!image.bitmapsInUse && !bitmaps.some((b) => b.bits !== undefined)) return;
  checkUsable(image);
  if (!image.writable) throw new BlockLayerError(`qcow2: cannot store bitmaps in read-only image '${image.name}'`);
  await image.lock.run(async () => {
    const old = await readDirectory(image);
    // Stored ones keep their place in the directory, new ones follow (as QEMU appends them).
    const place = (b: StoredBitmap): number => {
      const at = old.findIndex((e) => e.name === b.name);
      return at < 0 ? old.length + bitmaps.indexOf(b) : at;
    };
    const entries: BitmapEntry[] = [];
    const replaced: BitmapEntry[] = [];
    for (const bitmap of [...bitmaps].sort((a, b) => place(a) - place(b))) {
      const stored = old.find((e) => e.name === bitmap.name);
      if (bitmap.bits === undefined) {
        if (stored !== undefined) entries.push(stored);
        continue;
      }
      if (stored !== undefined) replaced.push(stored);
      entries.push({
        name: bitmap.name,
        flags: bitmap.enabled ? FLAG_AUTO : 0,
        granularityBits: Math.log2(bitmap.granularity),
        ...(await writeBits(image, bitmap.bits)),
      });
    }
    // Entries not given were removed, if the store had them all (they were loaded); else they stay.
    const notGiven = old.filter((e) => !bitmaps.some((b) => b.name === e.name));
    if (image.bitmapsInUse) replaced.push(...notGiven);
    else entries.unshift(...notGiven);
    // Only inconsistent ones, none gone: the directory on disk says it all already.
    const unchanged = replaced.length === 0 && entries.length === old.length && entries.every((e, i) => e === old[i]);
    if (!unchanged) await replaceDirectory(image, entries, replaced);
    image.bitmapsInUse = false;
    // Stored not in use: a later write (the node made writable again) must find them in use again, or drop them.
    image.preparedForWrite = false;
  });
}

/**
 * Takes bitmap `name` out of the image at once, the others left as they
 * are (QEMU's qcow2_co_remove_persistent_dirty_bitmap); nothing if the
 * image holds none of that name.
 */
export async function removeStoredBitmap(image: Qcow2Image, name: string): Promise<void> {
  checkUsable(image);
  if (!image.writable) throw new BlockLayerError(`qcow2: cannot remove a bitmap from read-only image '${image.name}'`);
  await image.lock.run(async () => {
    const old = await readDirectory(image);
    const gone = old.find((e) => e.name === name);
    if (gone !== undefined) await replaceDirectory(image, old.filter((e) => e !== gone), [gone]);
  });
}

/**
 * Writes directory `entries` (their bits and tables are written already)
 * and points the header at it, then frees the old directory and the
 * `dropped` entries' clusters. With the lock held.
 */
async function replaceDirectory(image: Qcow2Image, entries: readonly BitmapEntry[], dropped: readonly BitmapEntry[]): Promise<void> {
  const dirBuf = buildDirectory(entries);
  if (dirBuf.length > MAX_BITMAP_DIRECTORY_SIZE) throw new BlockLayerError(`qcow2: bitmap directory of '${image.name}' would be too large`);
  const oldDir = image.bitmapDirectory;
  let dir: { offset: number; size: number; count: number } | undefined;
  if (entries.length > 0) {
    const cs = image.g.clusterSize;
    dir = { offset: await allocateNonZero(image, Math.ceil(dirBuf.length / cs), 'bitmap directory', dirBuf.length), size: dirBuf.length, count: entries.length };
    await writeMetadata(image, dir.offset, dirBuf);
  }
  // Bits, tables, directory and their refcounts on disk before the header points at them.
  await writeDirtyRefblocks(image);
  await flushFile(image);
  await writeHeaderBitmaps(image, dir);
  for (const entry of dropped) await queueEntryFrees(image, entry);
  if (oldDir !== undefined) queueFree(image, oldDir.offset, oldDir.size, 'other');
  await syncMetadata(image);
}
