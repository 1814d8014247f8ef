/**
 * Opening an image: the header checks in QEMU 7.2's order and words
 * (qcow2_do_open), what this driver refuses (encryption, external data
 * files, extended L2 entries; zstd if its library cannot be loaded), the L1 and refcount tables and the
 * snapshot table read within QEMU's limits, the caches, a dirty image
 * repaired or refused, and the backing file.
 */
import type { DriverOpenContext } from '../../core/block/driver.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import { nodeFilename } from '../../core/block/node-info.js';
import { BlockLayerError } from '../../core/errors.js';
import { openBacking } from './qcow2-backing.js';
import { TableCache } from './qcow2-cache.js';
import { cacheSizes } from './qcow2-cache-sizes.js';
import { repairDirtyRefcounts } from './qcow2-check.js';
import {
  geometry,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
  INCOMPAT_KNOWN,
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_ZSTD,
  MAX_L1_BYTES,
  MAX_REFTABLE_BYTES,
  MAX_SNAPSHOTS,
  readL1Entry,
  readReftableEntry,
  SNAPSHOT_HEADER_SIZE,
  sizeToL1,
} from './qcow2-format.js';
import {
  checkCompressionType,
  FIXED_HEADER_BYTES,
  type Qcow2Extensions,
  type Qcow2Header,
  readBackingName,
  readExtensions,
  readFixedHeader,
  unsupportedFeatures,
} from './qcow2-header.js';
import { freshFromOpen, type ImageFile, newLocks, type Qcow2Image, readFile, writeIncompatible } from './qcow2-image.js';
import { writeMetadata } from './qcow2-overlap.js';
import { readSnapshotTable, type SnapshotTable } from './qcow2-snapshots.js';
import { writeBackL2Slice } from './qcow2-sync.js';
import { zstdBinding } from './qcow2-zstd.js';
import type { Qcow2Options } from './options.js';

const INT64_MAX = 2n ** 63n - 1n;
const INT_MAX = 2n ** 31n - 1n;
const UINT_MAX = 2 ** 32 - 1;

/** QEMU's qcow2_validate_table. */
function validateTable(offset: bigint, entries: number, entryLength: number, maxBytes: number, what: string, clusterSize: number): void {
  if (entries > maxBytes / entryLength) throw new BlockLayerError(`${what} too large`);
  if (INT64_MAX - BigInt(entries * entryLength) < offset || offset % BigInt(clusterSize) !== 0n) {
    throw new BlockLayerError(`${what} offset invalid`);
  }
}

/** The checks between the feature bits and reading the L1 table, in QEMU's order; `repairing`: opened read-write for a check. */
function checkLayout(header: Qcow2Header, writable: boolean, repairing: boolean): void {
  const cs = 2 ** header.clusterBits;
  if ((header.incompatible & INCOMPAT_CORRUPT) !== 0n && writable && !repairing) {
    throw new BlockLayerError('qcow2: Image is corrupt; cannot be opened read/write');
  }
  if (header.refcountOrder > 6) throw new BlockLayerError('Reference count entry width too large; may not exceed 64 bits');
  if (header.refcountTableClusters === 0) throw new BlockLayerError('Image does not contain a reference count table');
  validateTable(header.refcountTableOffset, header.refcountTableClusters, cs, MAX_REFTABLE_BYTES, 'Reference count table', cs);
  validateTable(header.snapshotsOffset, header.nbSnapshots, SNAPSHOT_HEADER_SIZE, SNAPSHOT_HEADER_SIZE * MAX_SNAPSHOTS, 'Snapshot table', cs);
  validateTable(header.l1TableOffset, header.l1Size, 8, MAX_L1_BYTES, 'Active L1 table', cs);
  const needed = sizeToL1(header.size, header.clusterBits);
  if (needed > INT_MAX) throw new BlockLayerError('Image is too big');
  if (BigInt(header.l1Size) < needed) throw new BlockLayerError('L1 table is too small');
  if (header.cryptMethod === 1) throw new BlockLayerError('qcow2: AES-CBC encrypted images are not supported');
  if (header.cryptMethod === 2) throw new BlockLayerError('qcow2: LUKS encrypted images are not supported');
  if (header.cryptMethod > 2) throw new BlockLayerError(`Unsupported encryption method ${header.cryptMethod}`);
}

/** What QEMU supports but this driver refuses, each with its own message. */
function refuseUnsupported(header: Qcow2Header, ext: Qcow2Extensions, name: string): void {
  if ((header.incompatible & INCOMPAT_DATA_FILE) !== 0n) {
    throw new BlockLayerError(`qcow2: Image '${name}' has an external data file, which is not supported`);
  }
  if ((header.autoclear & 2n) !== 0n) throw new BlockLayerError('data-file-raw requires a data file');
  if ((header.incompatible & INCOMPAT_EXTL2) !== 0n) {
    throw new BlockLayerError(`qcow2: Image '${name}' uses extended L2 entries (subclusters), which are not supported`);
  }
  if (header.compressionType === COMPRESSION_ZSTD) zstdBinding(`qcow2: Image '${name}' uses zstd compression`);
  if (ext.cryptoHeader) throw new BlockLayerError('qcow2: LUKS encrypted images are not supported');
}

export interface ImageParams {
  name: string;
  file: ImageFile;
  writable: boolean;
  header: Qcow2Header;
  size: number;
  l1: Buffer;
  reftable: Buffer;
  snapshots: SnapshotTable;
  bitmapDirectory: { offset: number; size: number } | undefined;
  options: Qcow2Options;
  fileAllocation: () => Promise<number | undefined>;
  /** Opened for a check (default false). */
  forCheck?: boolean;
}

/** The state of an image whose tables are read (used by open and create). */
export function buildImage(p: ImageParams): Qcow2Image {
  const g = geometry(p.header.clusterBits, p.header.refcountOrder);
  const sizes = cacheSizes(p.options, g.clusterSize, p.size);
  const interval = p.options['cache-clean-interval'] ?? 600;
  if (interval < 0 || interval > UINT_MAX) throw new BlockLayerError('Cache clean interval too big');
  const lazy = p.options['lazy-refcounts'] ?? (p.header.compatible & COMPAT_LAZY_REFCOUNTS) !== 0n;
  if (lazy && p.header.version < 3) {
    throw new BlockLayerError('Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level');
  }
  const load = (offset: number, buf: Buffer) => readFile(p.file, offset, buf);
  const metadata = new Map<number, 'l2' | 'refblock'>();
  for (let at = 0; at < p.l1.length; at += 8) {
    const { offset } = readL1Entry(p.l1, at);
    if (offset !== 0 && offset % g.clusterSize === 0) metadata.set(offset / g.clusterSize, 'l2');
  }
  for (let at = 0; at < p.reftable.length; at += 8) {
    const { offset } = readReftableEntry(p.reftable, at);
    if (offset !== 0 && offset % g.clusterSize === 0) metadata.set(offset / g.clusterSize, 'refblock');
  }
  const image: Qcow2Image = {
    name: p.name,
    file: p.file,
    backing: undefined,
    explicitBacking: false,
    backingName: undefined,
    backingFormat: undefined,
    g,
    version: p.header.version,
    size: p.size,
    writable: p.writable,
    incompatible: p.header.incompatible,
    compressionType: p.header.compressionType,
    compatible: p.header.compatible,
    autoclear: p.header.autoclear,
    l1: p.l1,
    l1Offset: Number(p.header.l1TableOffset),
    l1Size: p.header.l1Size,
    l1Dirty: undefined,
    reftable: p.reftable,
    reftableOffset: Number(p.header.refcountTableOffset),
    reftableClusters: p.header.refcountTableClusters,
    snapshotsOffset: Number(p.header.snapshotsOffset),
    snapshots: p.snapshots,
    bitmapDirectory: p.bitmapDirectory,
    l2Cache: new TableCache(sizes.l2Entries, sizes.l2EntrySize, {
      load,
      writeBack: (offset, slice) => writeBackL2Slice(image, offset, slice),
    }),
    refcountCache: new TableCache(sizes.refcountEntries, g.clusterSize, {
      load,
      writeBack: (offset, block) => writeMetadata(image, offset, block, 'refcount block'),
    }),
    l2SliceEntries: sizes.l2EntrySize / 8,
    ...newLocks(),
    freeClusterIndex: 0,
    freeByteOffset: 0,
    pendingFrees: [],
    unflushed: false,
    lazyRefcounts: lazy,
    keepDirty: false,
    passDiscard: {
      never: false,
      always: true,
      request: p.options['pass-discard-request'] ?? true,
      snapshot: p.options['pass-discard-snapshot'] ?? true,
      other: p.options['pass-discard-other'] ?? false,
    },
    overlap: p.options['overlap-check'] ?? 'cached',
    metadata,
    inactiveL2: undefined,
    failure: undefined,
    preparedForWrite: false,
    bitmapsInUse: false,
    forCheck: p.forCheck ?? false,
    metadataPreallocation: undefined,
    fileAllocation: p.fileAllocation,
    cleanTimer: undefined,
  };
  if (interval > 0) {
    image.cleanTimer = setInterval(() => {
      void image.lock.run(async () => {
        image.l2Cache.cleanUnused();
        image.refcountCache.cleanUnused();
      });
    }, interval * 1000);
    image.cleanTimer.unref();
  }
  return image;
}

/** The bytes the file node's host allocated, if its driver tells (qemu-img info's actual-size). */
function fileAllocation(file: NodeChild): () => Promise<number | undefined> {
  return async () => (await file.node.driver.describe?.(file.node.driverState))?.actualSize;
}

/**
 * QEMU's bdrv_backing_overridden, for a backing given in the options: the
 * node is not the one the header names (compared by name as recorded), or
 * there is none though the header names one.
 */
export async function backingOverridden(backing: NodeChild | undefined, recorded: string | undefined): Promise<boolean> {
  if (backing === undefined) return recorded !== undefined;
  return recorded !== (await nodeFilename(backing.node));
}

export async function openImage(ctx: DriverOpenContext<Qcow2Options>): Promise<Qcow2Image> {
  const file = ctx.children.get('file')!;
  const name = await nodeFilename(file.node);
  // A file that fell back to read-only (auto-read-only) takes the image with it.
  if (!ctx.readOnly && file.node.readOnly) {
    if (!ctx.autoReadOnly) throw new BlockLayerError(`qcow2: the file of image '${name}' is read-only`);
    ctx.fallBackToReadOnly();
  }
  const writable = !ctx.readOnly && !file.node.readOnly;
  const fixed = Buffer.alloc(FIXED_HEADER_BYTES);
  await readFile(file, 0, fixed);
  const header = readFixedHeader(fixed);
  const cluster0 = Buffer.alloc(2 ** header.clusterBits);
  await readFile(file, 0, cluster0);
  checkCompressionType(header);
  if ((header.incompatible & ~INCOMPAT_KNOWN) !== 0n) throw new BlockLayerError(unsupportedFeatures(cluster0, header));
  checkLayout(header, writable, ctx.check);
  const ext = readExtensions(cluster0, header);
  refuseUnsupported(header, ext, name);
  const backingName = readBackingName(cluster0, header);
  const size = Number((header.size / 512n) * 512n);
  if (!Number.isSafeInteger(size)) throw new BlockLayerError(`qcow2: Image '${name}' is larger than blocklayer supports (2^53 bytes)`);
  const l1 = Buffer.alloc(header.l1Size * 8);
  await readFile(file, Number(header.l1TableOffset), l1);
  const reftable = Buffer.alloc(header.refcountTableClusters * 2 ** header.clusterBits);
  await readFile(file, Number(header.refcountTableOffset), reftable);
  const snapshots = await readSnapshotTable((o, b) => readFile(file, o, b), Number(header.snapshotsOffset), header.nbSnapshots, size);
  const bitmaps = ext.bitmapDirectory;
  const image = buildImage({
    name,
    file,
    writable,
    header,
    size,
    l1,
    reftable,
    snapshots,
    bitmapDirectory: bitmaps === undefined ? undefined : { offset: Number(bitmaps.offset), size: Number(bitmaps.size) },
    options: ctx.options,
    fileAllocation: fileAllocation(file),
    forCheck: ctx.check,
  });
  image.backingName = backingName;
  image.backingFormat = ext.backingFormat;
  if (writable) {
    image.growAhead = { end: file.length };
    const freshFrom = freshFromOpen(file);
    if (freshFrom !== undefined) image.freshFrom = freshFrom;
  }
  try {
    // As QEMU: a dirty image is repaired when opened read-write, except for a check, which reports (and repairs) it itself.
    if ((image.incompatible & INCOMPAT_DIRTY) !== 0n && ctx.check) image.keepDirty = true;
    else if (writable && (image.incompatible & INCOMPAT_DIRTY) !== 0n) {
      await repairDirtyRefcounts(image);
      await writeIncompatible(image, image.incompatible & ~INCOMPAT_DIRTY);
    }
    const imagePath = typeof file.node.options.filename === 'string' ? file.node.options.filename : name;
    image.imagePath = imagePath;
    image.backing = await openBacking(ctx, name, imagePath, { name: backingName, format: ext.backingFormat });
    image.explicitBacking = 'backing' in ctx.givenOptions && (await backingOverridden(image.backing, backingName));
  } catch (error) {
    if (image.cleanTimer !== undefined) clearInterval(image.cleanTimer);
    throw error;
  }
  return image;
}
