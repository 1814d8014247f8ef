/**
 * qcow2: QEMU's copy-on-write image format (block/qcow2*.c), versions 2
 * and 3, over any protocol node. Guest clusters map through L1 and L2
 * tables to host clusters; refcounts track what is allocated; unallocated
 * clusters read from the backing node. See README.md for what is supported
 * and refused, and qcow2-*.ts for each part of the format.
 */
import { type BackingFileChange, defineBlockDriver, type DriverLimits, type NodeDescription, type PreallocMode } from '../../core/block/driver.js';
import type { BlockStatusExtent, WriteFlags, ZeroFlags } from '../../core/block/request.js';
import { bitmapInfo, bitmapStoreRefusal, loadBitmaps, markBitmapsInUse, removeStoredBitmap, storeBitmaps } from './qcow2-bitmaps.js';
import { changeBackingFile, linkBacking, openBackingFile } from './qcow2-change-backing.js';
import { makeEmpty } from './qcow2-make-empty.js';
import { amendImage, type Qcow2AmendOptions, qcow2AmendOptions } from './qcow2-amend.js';
import { createSnapshot, deleteSnapshot, gotoSnapshot, loadSnapshotTmp } from './qcow2-snapshot-ops.js';
import { measureQcow2 } from './qcow2-measure.js';
import { checkQcow2 } from './qcow2-check.js';
import { blockdevCreateImage } from './qcow2-blockdev-create.js';
import { createImage } from './qcow2-create.js';
import { COMPAT_LAZY_REFCOUNTS, COMPRESSION_ZSTD, INCOMPAT_CORRUPT, INCOMPAT_DIRTY } from './qcow2-format.js';
import type { Qcow2Image } from './qcow2-image.js';
import { openImage } from './qcow2-open.js';
import { copyRangeFromGuest, readGuest } from './qcow2-read.js';
import { reopenImage } from './qcow2-reopen.js';
import { statusExtents } from './qcow2-status.js';
import { closeImage, syncMetadata } from './qcow2-sync.js';
import { resizeGuest } from './qcow2-truncate.js';
import { copyRangeToGuest, finishCompressed, writeCompressedGuest, writeGuest } from './qcow2-write.js';
import { discardGuest, zeroGuest } from './qcow2-zero.js';
import {
  type Qcow2BlockdevCreateOptions,
  qcow2BlockdevCreateOptions,
  type Qcow2CreateOptions,
  qcow2CreateOptions,
  type Qcow2Options,
  qcow2Options,
} from './options.js';

/** Writes the cached metadata back and clears the dirty bit set for lazy refcounts. */
async function qcow2Close(image: Qcow2Image): Promise<void> {
  await closeImage(image);
}

/** Requests of any alignment (partial clusters are handled here); the cluster is the allocation unit. */
function qcow2Limits(image: Qcow2Image): Partial<DriverLimits> {
  return { clusterSize: image.g.clusterSize };
}

/** The virtual size. */
function qcow2GetLength(image: Qcow2Image): number {
  return image.size;
}

/** Reads guest data. */
function qcow2Read(image: Qcow2Image, offset: number, buf: Buffer): Promise<void> {
  return readGuest(image, offset, buf);
}

/** Writes guest data, compressed when asked. */
function qcow2Write(image: Qcow2Image, offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
  return flags.compressed ? writeCompressedGuest(image, offset, buf) : writeGuest(image, offset, buf);
}

/** Zero clusters where possible, zeroes as data elsewhere. */
async function qcow2WriteZeroes(image: Qcow2Image, offset: number, length: number, flags: ZeroFlags): Promise<void> {
  await zeroGuest(image, offset, length, flags);
}

/** Frees whole clusters (v3: they read as zeroes; v2: the backing file shows through). */
async function qcow2Discard(image: Qcow2Image, offset: number, length: number): Promise<void> {
  await discardGuest(image, offset, length);
}

/** Writes the cached metadata back in crash-safe order; the node then flushes the file. */
async function qcow2Flush(image: Qcow2Image): Promise<void> {
  if (image.writable) await image.lock.run(() => syncMetadata(image));
}

/** Grows the image. */
async function qcow2Truncate(image: Qcow2Image, length: number, preallocation: PreallocMode): Promise<void> {
  await resizeGuest(image, length, preallocation);
}

/** Data, zero and allocation status, with host offsets of normal clusters. */
async function qcow2BlockStatus(image: Qcow2Image, offset: number, length: number): Promise<BlockStatusExtent[]> {
  return statusExtents(image, offset, length);
}

/**
 * qemu-img info's format-specific data, dirty flag, and the backing file
 * name and format the header records; the file's name unless `backing`
 * was given explicitly.
 */
async function qcow2Describe(image: Qcow2Image): Promise<NodeDescription> {
  const refcountBits = image.g.refcountBits;
  const bitmaps = image.version >= 3 ? await bitmapInfo(image) : undefined;
  const data: Record<string, unknown> =
    image.version >= 3
      ? {
          compat: '1.1',
          'compression-type': image.compressionType === COMPRESSION_ZSTD ? 'zstd' : 'zlib',
          'lazy-refcounts': (image.compatible & COMPAT_LAZY_REFCOUNTS) !== 0n,
          ...(bitmaps === undefined ? {} : { bitmaps }),
          'refcount-bits': refcountBits,
          corrupt: (image.incompatible & INCOMPAT_CORRUPT) !== 0n,
          'extended-l2': false,
        }
      : { compat: '0.10', 'compression-type': 'zlib', 'refcount-bits': refcountBits };
  const description: NodeDescription = {
    formatSpecific: { type: 'qcow2', data },
    dirtyFlag: (image.incompatible & INCOMPAT_DIRTY) !== 0n,
  };
  if (!image.explicitBacking) description.filename = image.name;
  if (image.backingName !== undefined) description.backingFilename = image.backingName;
  if (image.backingFormat !== undefined) description.backingFormat = image.backingFormat;
  if (image.snapshots.infos.length > 0) description.snapshots = image.snapshots.infos;
  return description;
}

/** Names another backing file (or none) in the header, once what was written is durable (stream, commit). */
async function qcow2ChangeBackingFile(image: Qcow2Image, change: BackingFileChange): Promise<void> {
  await changeBackingFile(image, change);
}

export const qcow2Driver = defineBlockDriver<Qcow2Options, Qcow2Image, Qcow2CreateOptions, Qcow2BlockdevCreateOptions>({
  name: 'qcow2',
  kind: 'format',
  summary: "QEMU's copy-on-write image format (v2 and v3)",
  options: qcow2Options,
  children: [
    { name: 'file', required: true },
    { name: 'backing', required: false, readOnly: true },
  ],
  capabilities: {
    canZero: true,
    canDiscard: true,
    canFua: false,
    canCompress: true,
    concurrency: 'parallel',
    preallocation: ['metadata', 'falloc', 'full'],
  },
  createOptions: qcow2CreateOptions,
  blockdevCreateOptions: qcow2BlockdevCreateOptions,
  open: openImage,
  reopen: reopenImage,
  close: qcow2Close,
  limits: qcow2Limits,
  getLength: qcow2GetLength,
  read: qcow2Read,
  write: qcow2Write,
  writeZeroes: qcow2WriteZeroes,
  discard: qcow2Discard,
  flush: qcow2Flush,
  truncate: qcow2Truncate,
  blockStatus: qcow2BlockStatus,
  copyRangeFrom: copyRangeFromGuest,
  copyRangeTo: copyRangeToGuest,
  describe: qcow2Describe,
  create: createImage,
  measure: measureQcow2,
  blockdevCreate: blockdevCreateImage,
  check: checkQcow2,
  changeBackingFile: qcow2ChangeBackingFile,
  makeEmpty,
  amendOptions: qcow2AmendOptions,
  amend: (image, options) => amendImage(image, options as Qcow2AmendOptions),
  snapshotCreate: createSnapshot,
  snapshotGoto: gotoSnapshot,
  snapshotDelete: deleteSnapshot,
  finishCompressed,
  snapshotLoadTmp: loadSnapshotTmp,
  linkBacking,
  openBackingFile,
  loadBitmaps,
  markBitmapsInUse,
  storeBitmaps,
  removeBitmap: removeStoredBitmap,
  bitmapStoreRefusal,
  canStoreBitmaps: (image: Qcow2Image) => image.version >= 3,
});
