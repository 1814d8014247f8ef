/**
 * qemu-img amend for qcow2 (QEMU's qcow2_amend_options), in QEMU's order
 * and words: the options read and checked, then an upgrade to v3 first
 * (snapshot entries given their v3 extra data), the backing file (only the
 * one recorded), lazy refcounts on or off (off: the image made clean), the
 * refcount width (qcow2-refcount-order.ts), the size, and a downgrade to v2 last (the image made
 * clean, zero clusters turned into data or unallocated clusters). The
 * header is rewritten as qcow2_update_header writes it, and flushed.
 * Refused, where QEMU goes on: a downgrade with persistent bitmaps or
 * with zero clusters in internal snapshots.
 */
import { BlockLayerError } from '../../core/errors.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';
import {
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_ZLIB,
  HEADER_COMPRESSION_TYPE_OFFSET,
  HEADER_INCOMPAT_OFFSET,
  HEADER_REFTABLE_OFFSET,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DIRTY,
  readL1Entry,
  readL2Entry,
  V2_HEADER_LENGTH,
  V3_HEADER_LENGTH,
} from './qcow2-format.js';
import { headerWithBacking, readFixedHeader } from './qcow2-header.js';
import { checkUsable, flushFile, type Qcow2Image, readFile, writeFile } from './qcow2-image.js';
import { expandZeroClusters } from './qcow2-expand-zero.js';
import { changeRefcountOrder } from './qcow2-refcount-order.js';
import { rewriteSnapshotTable } from './qcow2-snapshot-ops.js';
import { prepareForWrite, settleImage, syncMetadata, withWholeImage } from './qcow2-sync.js';
import { resizeGuest } from './qcow2-truncate.js';

/** qemu-img amend's -o for qcow2 (QEMU's qcow2_amend_opts, without encryption). */
export const qcow2AmendOptions = Qapi.struct('Qcow2AmendOptions', {
  size: Qapi.optional(Qapi.size({ description: 'new virtual size (a multiple of 512; smaller drops what lies past it)' })),
  compat: Qapi.optional(Qapi.str({ description: 'qcow2 version: 0.10 (or v2), 1.1 (or v3)' })),
  backing_file: Qapi.optional(Qapi.str({ description: 'only the one recorded: qemu-img rebase changes it' })),
  backing_fmt: Qapi.optional(Qapi.str({ description: 'only the one recorded: qemu-img rebase changes it' })),
  lazy_refcounts: Qapi.optional(Qapi.bool({ description: 'the lazy refcounts feature (v3 only)' })),
  refcount_bits: Qapi.optional(Qapi.int({ description: 'the refcount width: a power of two up to 64 (other than 16 needs v3)' })),
  data_file: Qapi.optional(Qapi.str({ description: 'refused: this driver makes no images with an external data file' })),
  data_file_raw: Qapi.optional(Qapi.bool({ description: 'refused on existing images, as by QEMU' })),
});

export type Qcow2AmendOptions = Static<typeof qcow2AmendOptions>;

const V3_HINT = '(use compat=1.1 or greater)';

/** -o compat as amend reads it. */
function amendVersion(compat: string | undefined, current: number): number {
  if (compat === undefined) return current;
  if (compat === '0.10' || compat === 'v2') return 2;
  if (compat === '1.1' || compat === 'v3') return 3;
  throw new BlockLayerError(`Unknown compatibility level ${compat}`);
}

export async function amendImage(image: Qcow2Image, o: Qcow2AmendOptions): Promise<void> {
  checkUsable(image);
  const version = amendVersion(o.compat, image.version);
  const refcountBits = o.refcount_bits ?? image.g.refcountBits;
  if (refcountBits <= 0 || refcountBits > 64 || !Number.isInteger(Math.log2(refcountBits))) {
    throw new BlockLayerError('Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (o.data_file !== undefined) throw new BlockLayerError('data-file can only be set for images that use an external data file');
  if (o.data_file_raw === true) throw new BlockLayerError('data-file-raw cannot be set on existing images');
  if (version > image.version) await exclusively(image, () => upgrade(image));
  if ((o.backing_file !== undefined || o.backing_fmt !== undefined) && (o.backing_file !== image.backingName || o.backing_fmt !== image.backingFormat)) {
    throw new BlockLayerError("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.");
  }
  const lazy = o.lazy_refcounts ?? image.lazyRefcounts;
  if (lazy !== image.lazyRefcounts) {
    if (lazy && version < 3) {
      throw new BlockLayerError(`Lazy refcounts only supported with compatibility level 1.1 and above ${V3_HINT}`);
    }
    await exclusively(image, async () => {
      if (!lazy) await makeClean(image);
      image.compatible = lazy ? image.compatible | COMPAT_LAZY_REFCOUNTS : image.compatible & ~COMPAT_LAZY_REFCOUNTS;
      await rewriteHeader(image);
      image.lazyRefcounts = lazy;
    });
  }
  if (refcountBits !== image.g.refcountBits) {
    if (version < 3 && refcountBits !== 16) {
      throw new BlockLayerError(`Refcount widths other than 16 bits require compatibility level 1.1 or above ${V3_HINT}`);
    }
    await exclusively(image, () => changeRefcountOrder(image, Math.log2(refcountBits), () => rewriteHeader(image)));
  }
  if (o.size !== undefined && o.size !== 0) await resizeGuest(image, o.size);
  if (version < image.version) await exclusively(image, () => downgrade(image));
}

/** QEMU's qcow2_upgrade: v3 snapshot entries (the table rewritten if one lacks the extra data v3 requires), then the header. */
async function upgrade(image: Qcow2Image): Promise<void> {
  if (image.snapshots.entries.some((e) => e.extraDataSize < 16)) await rewriteSnapshotTable(image);
  image.version = 3;
  await rewriteHeader(image);
}

/** QEMU's qcow2_downgrade to v2. */
async function downgrade(image: Qcow2Image): Promise<void> {
  if (image.g.refcountOrder !== 4) throw new BlockLayerError('compat=0.10 requires refcount_bits=16');
  for (const entry of image.snapshots.entries) {
    if (entry.vmStateSize > 0xffffffffn || entry.diskSize !== BigInt(image.size)) {
      throw new BlockLayerError('Internal snapshots prevent downgrade of image');
    }
  }
  // QEMU 7.2 goes on, and leaves the bitmaps in a v2 header, inconsistent, their clusters partly leaked.
  if (image.bitmapDirectory !== undefined) {
    throw new BlockLayerError("blocklayer's qcow2 driver cannot downgrade an image with persistent bitmaps (remove them first)");
  }
  if ((image.incompatible & INCOMPAT_DIRTY) !== 0n) await makeClean(image);
  if ((image.incompatible & ~INCOMPAT_COMPRESSION) !== 0n) {
    throw new BlockLayerError(`Cannot downgrade an image with incompatible features 0x${image.incompatible.toString(16)} set`);
  }
  image.compatible = 0n;
  image.autoclear = 0n;
  await expandZeroClusters(image);
  if ((image.incompatible & INCOMPAT_COMPRESSION) !== 0n) {
    if (await hasCompressedClusters(image)) {
      throw new BlockLayerError('Cannot downgrade an image with zstd compression type and existing compressed clusters');
    }
    // Nothing is compressed yet: the image goes back to zlib, as QEMU's does.
    image.incompatible &= ~INCOMPAT_COMPRESSION;
    image.compressionType = COMPRESSION_ZLIB;
  }
  image.version = 2;
  await rewriteHeader(image);
}

/**
 * Whether the active L2 tables point at a compressed cluster (QEMU's
 * qcow2_has_compressed_clusters). Read from the file: the cache has just
 * been written back and emptied (expandZeroClusters).
 */
async function hasCompressedClusters(image: Qcow2Image): Promise<boolean> {
  const table = Buffer.alloc(image.g.clusterSize);
  for (let i = 0; i < image.l1Size * 8; i += 8) {
    const { offset } = readL1Entry(image.l1, i);
    if (offset === 0) continue;
    await readFile(image.file, offset, table);
    for (let at = 0; at < table.length; at += 8) {
      if (readL2Entry(table, at, image.g, image.version).kind === 'compressed') return true;
    }
  }
  return false;
}

/** QEMU's qcow2_mark_clean: everything cached on disk and flushed, then the dirty bit cleared. */
async function makeClean(image: Qcow2Image): Promise<void> {
  await settleImage(image);
  if ((image.incompatible & INCOMPAT_DIRTY) === 0n) return;
  image.incompatible &= ~INCOMPAT_DIRTY;
  await rewriteHeader(image);
}

/**
 * Header cluster 0 as qcow2_update_header writes it for the image's
 * version and feature bits (a v3 header is 112 bytes, a v2 one 72), the
 * extensions and backing file name kept; written in one piece and flushed.
 */
async function rewriteHeader(image: Qcow2Image): Promise<void> {
  await syncMetadata(image);
  if (image.unflushed) await flushFile(image);
  const cluster0 = Buffer.alloc(image.g.clusterSize);
  await readFile(image.file, 0, cluster0);
  const header = readFixedHeader(cluster0);
  const fixed = Buffer.alloc(image.version >= 3 ? V3_HEADER_LENGTH : V2_HEADER_LENGTH);
  cluster0.copy(fixed, 0, 0, V2_HEADER_LENGTH);
  fixed.writeUInt32BE(image.version, 4);
  fixed.writeBigUInt64BE(BigInt(image.reftableOffset), HEADER_REFTABLE_OFFSET);
  fixed.writeUInt32BE(image.reftableClusters, HEADER_REFTABLE_OFFSET + 8);
  if (image.version >= 3) {
    fixed.writeBigUInt64BE(image.incompatible, HEADER_INCOMPAT_OFFSET);
    fixed.writeBigUInt64BE(image.compatible, HEADER_INCOMPAT_OFFSET + 8);
    fixed.writeBigUInt64BE(image.autoclear, HEADER_INCOMPAT_OFFSET + 16);
    fixed.writeUInt32BE(image.g.refcountOrder, HEADER_INCOMPAT_OFFSET + 24);
    fixed.writeUInt32BE(V3_HEADER_LENGTH, HEADER_INCOMPAT_OFFSET + 28);
    fixed[HEADER_COMPRESSION_TYPE_OFFSET] = image.compressionType;
  }
  const rewritten = headerWithBacking(cluster0, header, { name: image.backingName, format: image.backingFormat }, { fixed });
  await writeFile(image, 0, rewritten);
  await flushFile(image);
}

/** The whole image to itself and the metadata lock, ready to be written. */
function exclusively(image: Qcow2Image, body: () => Promise<void>): Promise<void> {
  return withWholeImage(image, async () => {
    await prepareForWrite(image);
    await body();
  });
}
