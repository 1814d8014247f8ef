/**
 * The counting half of qemu-img check for qcow2 (QEMU 7.2's
 * calculate_refcounts): every reference to a host cluster is counted in
 * memory by walking the header, the active L1 and L2 tables, each
 * snapshot's tables and the snapshot table, the refcount table and blocks,
 * and the bitmap directory, tables and data. Entries are checked on the
 * way, with qemu-img's messages. Tables are read from the file (the caches
 * were written back first), as QEMU reads them.
 */
import { BlockIoError, type Errno, strerror } from '../../core/errors.js';
import { badTableEntry, type BitmapEntry, parseBitmapDirectory } from './qcow2-bitmaps.js';
import { MAX_L1_BYTES, readL1Entry, readL2Entry, readReftableEntry, refcountMax } from './qcow2-format.js';
import { flushFile, growFile, type Qcow2Image, readFile } from './qcow2-image.js';
import { writeMetadata } from './qcow2-overlap.js';

/** What may be repaired (QEMU's BDRV_FIX_LEAKS and BDRV_FIX_ERRORS). */
export interface Fix {
  leaks: boolean;
  errors: boolean;
}

export const NO_FIX: Fix = { leaks: false, errors: false };

/** QEMU's BdrvCheckResult: the counts, and the fragmentation info of the active tables. */
export interface CheckCounts {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  corruptionsFixed: number;
  leaksFixed: number;
  allocated: number;
  fragmented: number;
  compressed: number;
}

export function noCounts(): CheckCounts {
  return { corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0, allocated: 0, fragmented: 0, compressed: 0 };
}

/** Clusters per page of computed refcounts. */
const PAGE = 65536;

type Counts = Uint8Array | Uint16Array | Uint32Array;

/**
 * Computed refcounts, one per host cluster (QEMU's in-memory refcount
 * table), kept in pages made on the first count in their range, each count
 * as wide as the image's (8 bits below 8, 32 above 16, where counting
 * stops at 2^32 - 1). A file that is large but mostly holes, as a repair
 * leaves it when it grows the file to reach a far refcount block, costs
 * memory for its counted clusters only, where QEMU's table covers it all.
 */
export class RefTable {
  private pages: (Counts | undefined)[] = [];

  constructor(
    public size: number,
    private readonly refcountOrder: number,
  ) {}

  get(cluster: number): number {
    return cluster < this.size ? (this.pages[Math.floor(cluster / PAGE)]?.[cluster % PAGE] ?? 0) : 0;
  }

  set(cluster: number, value: number): void {
    this.grow(cluster + 1);
    const index = Math.floor(cluster / PAGE);
    let page = this.pages[index];
    if (page === undefined) {
      if (value === 0) return;
      while (this.pages.length < index) this.pages.push(undefined);
      page = this.pages[index] = this.refcountOrder <= 3 ? new Uint8Array(PAGE) : this.refcountOrder === 4 ? new Uint16Array(PAGE) : new Uint32Array(PAGE);
    }
    page[cluster % PAGE] = value;
  }

  /** Covers at least `size` clusters; the new ones count 0. */
  grow(size: number): void {
    if (size > this.size) this.size = size;
  }

  clear(): void {
    this.pages = [];
  }

  /** The first cluster of `[from, end)` counted at least once, or `end`; pages never counted in are skipped whole. */
  nextCounted(from: number, end: number): number {
    const stop = Math.min(end, this.size);
    for (let cluster = from; cluster < stop; ) {
      const index = Math.floor(cluster / PAGE);
      const page = this.pages[index];
      const pageEnd = Math.min(stop, (index + 1) * PAGE);
      if (page !== undefined) {
        for (; cluster < pageEnd; cluster++) if (page[cluster % PAGE] !== 0) return cluster;
      }
      cluster = pageEnd;
    }
    return end;
  }
}

/** One check pass over an image. */
export interface CheckRun {
  readonly image: Qcow2Image;
  counts: CheckCounts;
  /** qemu-img's stderr lines, in order. */
  readonly messages: string[];
  table: RefTable;
  /** The refcount structure must be rebuilt to repair the image. */
  rebuild: boolean;
  /** An unaligned refcount block was reported (QEMU reports one corruption event). */
  signalled: boolean;
}

/** Hex without a prefix, as QEMU's PRIx64. */
export const x = (value: number): string => value.toString(16);

/** A raw 64-bit table entry in hex. */
export const rawEntry = (buf: Buffer, at: number): string => buf.readBigUInt64BE(at).toString(16);

/**
 * Counts one reference to every cluster of `[offset, offset + size)`
 * (qcow2_inc_refcounts_imrt): ranges a cluster or more past the end of the
 * file are corruptions and not counted, so the table stays bounded.
 */
export function countReference(run: CheckRun, offset: number, size: number): void {
  if (size <= 0) return;
  const { image, table } = run;
  const cs = image.g.clusterSize;
  if (offset + size - image.file.length >= cs) {
    run.messages.push(
      'ERROR: counting reference for region exceeding the end of the file by one cluster or more: ' +
        `offset 0x${x(offset)} size 0x${x(size)}`,
    );
    run.counts.corruptions++;
    return;
  }
  const max = Math.min(refcountMax(image.g.refcountOrder), 0xffffffff);
  const last = Math.floor((offset + size - 1) / cs);
  table.grow(last + 1);
  for (let cluster = Math.floor(offset / cs); cluster <= last; cluster++) {
    const count = table.get(cluster);
    if (count >= max) {
      run.messages.push(
        `ERROR: overflow cluster offset=0x${x(cluster * cs)}`,
        'Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy ' +
          'if the image cannot be opened for writing',
      );
      run.counts.corruptions++;
      continue;
    }
    table.set(cluster, count + 1);
  }
}

/** Makes entry `index` of the L2 table at `l2Offset` a plain zero cluster, on disk (fix_l2_entry_by_zero). */
async function zeroEntry(run: CheckRun, l2Offset: number, table: Buffer, index: number, active: boolean): Promise<void> {
  const { image } = run;
  const at = index * 8;
  table.writeUInt32BE(0, at);
  table.writeUInt32BE(1, at + 4);
  await writeMetadata(image, l2Offset + at, table.subarray(at, at + 8), active ? 'active L2 table' : 'inactive L2 table');
  await flushFile(image);
  image.l2Cache.dropRange(l2Offset, l2Offset + image.g.clusterSize);
  run.counts.corruptions--;
  run.counts.corruptionsFixed++;
}

/** Counts what an L2 table references and checks its entries (check_refcounts_l2); `stats` for the active tables. */
async function checkL2(run: CheckRun, l2Offset: number, stats: boolean, fix: Fix, active: boolean): Promise<void> {
  const { image, counts } = run;
  const { g } = image;
  const cs = g.clusterSize;
  const table = Buffer.alloc(cs);
  await readFile(image.file, l2Offset, table);
  let nextContiguous = 0;
  for (let i = 0; i < g.l2Entries; i++) {
    const at = i * 8;
    // QEMU's cluster types ignore the version: a v2 zero flag reads as a zero cluster here.
    const entry = readL2Entry(table, at, g, 3);
    if (entry.kind !== 'compressed' && entry.invalid) {
      run.messages.push(`ERROR found l2 entry with reserved bits set: ${rawEntry(table, at)}`);
      counts.corruptions++;
    }
    if (entry.kind === 'compressed') {
      if (entry.copied) {
        run.messages.push(`ERROR: coffset=0x${x(entry.host)}: copied flag must never be set for compressed clusters`);
        counts.corruptions++;
      }
      countReference(run, entry.host, entry.compressedLength);
      if (stats) {
        counts.allocated++;
        counts.compressed++;
        counts.fragmented++;
      }
    } else if (entry.kind === 'normal' || entry.kind === 'zero-alloc') {
      const offset = entry.host;
      if (offset % cs !== 0) {
        counts.corruptions++;
        if (entry.kind === 'zero-alloc') {
          run.messages.push(
            `${fix.errors ? 'Repairing' : 'ERROR'} offset=${x(offset)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`,
          );
          if (fix.errors) {
            await zeroEntry(run, l2Offset, table, i, active);
            continue;
          }
        } else {
          run.messages.push(`ERROR offset=${x(offset)}: Data cluster is not properly aligned; L2 entry corrupted.`);
        }
      }
      if (stats) {
        counts.allocated++;
        if (nextContiguous !== 0 && offset !== nextContiguous) counts.fragmented++;
        nextContiguous = offset + cs;
      }
      countReference(run, offset, cs);
    }
  }
}

/** Counts an L1 table, its L2 tables and what they reference (check_refcounts_l1); `l1` is given for the active table only. */
async function checkL1(run: CheckRun, l1Offset: number, l1Size: number, l1: Buffer | undefined, stats: boolean, fix: Fix): Promise<void> {
  if (l1Size === 0) return;
  const { image } = run;
  const cs = image.g.clusterSize;
  countReference(run, l1Offset, l1Size * 8);
  let table = l1;
  if (table === undefined) {
    table = Buffer.alloc(l1Size * 8);
    await readFile(image.file, l1Offset, table);
  }
  for (let i = 0; i < l1Size; i++) {
    const at = i * 8;
    if (table.readUInt32BE(at) === 0 && table.readUInt32BE(at + 4) === 0) continue;
    const entry = readL1Entry(table, at);
    if (entry.reserved) {
      run.messages.push(`ERROR found L1 entry with reserved bits set: ${rawEntry(table, at)}`);
      run.counts.corruptions++;
    }
    countReference(run, entry.offset, cs);
    if (entry.offset % cs !== 0) {
      run.messages.push(`ERROR l2_offset=${x(entry.offset)}: Table is not cluster aligned; L1 entry corrupted`);
      run.counts.corruptions++;
    }
    await checkL2(run, entry.offset, stats, fix, l1 !== undefined);
  }
}

/** C's %# for hex: 0 stays "0". */
const alt = (value: number): string => (value === 0 ? '0' : `0x${x(value)}`);

async function countSnapshots(run: CheckRun, fix: Fix): Promise<void> {
  const { image } = run;
  for (const sn of image.snapshots.l1Tables) {
    const where = `ERROR snapshot ${sn.id} (${sn.name})`;
    if (sn.offset % image.g.clusterSize !== 0) {
      run.messages.push(`${where} l1_offset=${alt(sn.offset)}: L1 table is not cluster aligned; snapshot table entry corrupted`);
      run.counts.corruptions++;
    } else if (sn.size > MAX_L1_BYTES / 8) {
      run.messages.push(`${where} l1_size=${alt(sn.size)}: L1 table is too large; snapshot table entry corrupted`);
      run.counts.corruptions++;
    } else {
      await checkL1(run, sn.offset, sn.size, undefined, false, fix);
    }
  }
  countReference(run, image.snapshotsOffset, image.snapshots.byteSize);
}

/** Counts the bitmap directory, tables and data (qcow2_check_bitmaps_refcounts); a broken one fails the check. */
async function countBitmaps(run: CheckRun): Promise<void> {
  const { image } = run;
  const dir = image.bitmapDirectory;
  if (dir === undefined) return;
  const cs = image.g.clusterSize;
  countReference(run, dir.offset, dir.size);
  const buf = Buffer.alloc(dir.size);
  await readFile(image.file, dir.offset, buf);
  let tables: BitmapEntry[];
  try {
    tables = parseBitmapDirectory(buf, cs, image.name);
  } catch {
    run.counts.corruptions++;
    throw new BlockIoError('EINVAL');
  }
  for (const bitmap of tables) {
    countReference(run, bitmap.tableOffset, bitmap.tableSize * 8);
    const table = Buffer.alloc(bitmap.tableSize * 8);
    await readFile(image.file, bitmap.tableOffset, table);
    for (let at = 0; at < table.length; at += 8) {
      if (!badTableEntry(table, at, cs)) continue;
      run.counts.corruptions++;
      throw new BlockIoError('EINVAL');
    }
    for (let at = 0; at < table.length; at += 8) {
      const offset = readL1Entry(table, at).offset;
      if (offset !== 0) countReference(run, offset, cs);
    }
  }
}

/**
 * Grows the file to hold the refcount block at `offset`; the errno if it
 * cannot, after QEMU's line for a failed resize. Offsets past what a file
 * here can have (2^53 bytes) are too large, as they are for ext4 at 16 TiB
 * (QEMU says EINVAL instead past 2^63, before it tries).
 */
async function growForRefblock(run: CheckRun, offset: number): Promise<Errno | undefined> {
  const cs = run.image.g.clusterSize;
  if (!Number.isSafeInteger(offset + cs)) {
    run.messages.push(`Could not resize file: ${strerror('EFBIG')}`);
    return 'EFBIG';
  }
  try {
    await growFile(run.image, offset + cs);
    return undefined;
  } catch (error) {
    if (!(error instanceof BlockIoError)) throw error;
    run.messages.push(error.message === strerror(error.errno) ? `Could not resize file: ${error.message}` : error.message);
    return error.errno;
  }
}

/** Checks and counts the refcount blocks (check_refblocks); a block past the end of the file is repaired by growing it, or else by a rebuild. */
async function checkRefblocks(run: CheckRun, fix: Fix): Promise<void> {
  const { image, table } = run;
  const cs = image.g.clusterSize;
  for (let i = 0; i < image.reftable.length / 8; i++) {
    const { offset, reserved } = readReftableEntry(image.reftable, i * 8);
    if (reserved) {
      run.messages.push(`ERROR refcount table entry ${i} has reserved bits set`);
    } else if (offset % cs !== 0) {
      run.messages.push(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
    } else if (offset / cs >= table.size) {
      run.counts.corruptions++;
      run.messages.push(`${fix.errors ? 'Repairing' : 'ERROR'} refcount block ${i} is outside image`);
      if (fix.errors) {
        const failure = await growForRefblock(run, offset);
        if (failure === undefined) {
          table.grow(Math.ceil(image.file.length / cs));
          run.counts.corruptions--;
          run.counts.corruptionsFixed++;
          countReference(run, offset, cs);
        } else {
          // As QEMU: the refcount structure is rebuilt instead, which leaves the far block out.
          run.rebuild = true;
          run.messages.push(`ERROR could not resize image: ${strerror(failure)}`);
        }
      }
      continue;
    } else {
      if (offset === 0) continue;
      countReference(run, offset, cs);
      const count = table.get(offset / cs);
      if (count === 1) continue;
      run.messages.push(`ERROR refcount block ${i} refcount=${count}`);
    }
    run.counts.corruptions++;
    run.rebuild = true;
  }
}

/** Counts every reference in the image into `run.table` (calculate_refcounts). */
export async function calculateRefcounts(run: CheckRun, fix: Fix): Promise<void> {
  const { image } = run;
  const cs = image.g.clusterSize;
  countReference(run, 0, cs);
  await checkL1(run, image.l1Offset, image.l1Size, image.l1, true, fix);
  await countSnapshots(run, fix);
  countReference(run, image.reftableOffset, image.reftableClusters * cs);
  await countBitmaps(run);
  await checkRefblocks(run, fix);
}
