/**
 * The on-disk vocabulary of qcow2: constants, limits, and the decoding and
 * encoding of L1, L2 and refcount-table entries (docs/interop/qcow2.txt).
 * Entries are 64-bit big-endian; they are handled as two 32-bit halves so
 * that no BigInt is needed on the I/O path. Host offsets are numbers: every
 * offset a valid image can use is far below 2^53.
 */
export const QCOW2_MAGIC = 0x514649fb;
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
export const DEFAULT_CLUSTER_SIZE = 65536;
/** Largest active L1 table, in bytes (QEMU's QCOW_MAX_L1_SIZE). */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
/** Largest refcount table, in bytes (QCOW_MAX_REFTABLE_SIZE). */
export const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
export const MAX_SNAPSHOTS = 65536;
export const SNAPSHOT_HEADER_SIZE = 40;
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;
export const MAX_SNAPSHOT_TABLE_BYTES = 1024 * MAX_SNAPSHOTS;
export const MAX_BACKING_NAME = 1023;
/** Header bytes QEMU 7.2 writes for v3 (header_length). */
export const V3_HEADER_LENGTH = 112;
export const V2_HEADER_LENGTH = 72;
const SECTOR = 512;

export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_CRYPTO_HEADER = 0x0537be77;
export const EXT_BITMAPS = 0x23852875;
export const EXT_DATA_FILE = 0x44415441;

export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
/** The header's compression type (byte 104 of a v3 header; bit 3 of the incompatible features says it is not zlib). */
export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;
/** Where the compression type is in the header. */
export const HEADER_COMPRESSION_TYPE_OFFSET = 104;
/** Incompatible bits QEMU 7.2 knows; others make the image unreadable. */
export const INCOMPAT_KNOWN = 0x1fn;
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;

/** Header field offsets for the small in-place header writes. */
export const HEADER_SIZE_OFFSET = 24;
export const HEADER_L1_OFFSET = 36;
export const HEADER_REFTABLE_OFFSET = 48;
export const HEADER_INCOMPAT_OFFSET = 72;
export const HEADER_AUTOCLEAR_OFFSET = 88;

const TWO32 = 2 ** 32;

/** What an L2 entry says about its guest cluster (QEMU's QCow2ClusterType). */
export type ClusterKind = 'unallocated' | 'zero-plain' | 'zero-alloc' | 'normal' | 'compressed';

/** A decoded L2 entry. `host` is the cluster offset, or the byte offset of compressed data. */
export interface L2Entry {
  kind: ClusterKind;
  host: number;
  copied: boolean;
  /** Compressed data: bytes to read from `host` (whole 512-byte sectors, minus the offset into the first). */
  compressedLength: number;
  /** Reserved bits are set (standard descriptors), or COPIED on a compressed entry. */
  invalid: boolean;
}

/** Per-image sizes derived from cluster_bits and refcount_order. */
export interface Geometry {
  clusterBits: number;
  clusterSize: number;
  /** Entries per L2 table. */
  l2Entries: number;
  l2Bits: number;
  refcountOrder: number;
  refcountBits: number;
  /** Entries per refcount block. */
  refblockEntries: number;
  /** Bit where the compressed sector count starts (62 - (cluster_bits - 8)). */
  csizeShift: number;
  csizeMask: number;
  /** Bytes of guest data one L1 entry covers. */
  l1Coverage: number;
}

export function geometry(clusterBits: number, refcountOrder: number): Geometry {
  const clusterSize = 2 ** clusterBits;
  const refcountBits = 2 ** refcountOrder;
  const l2Bits = clusterBits - 3;
  return {
    clusterBits,
    clusterSize,
    l2Entries: 2 ** l2Bits,
    l2Bits,
    refcountOrder,
    refcountBits,
    refblockEntries: (clusterSize * 8) / refcountBits,
    csizeShift: 62 - (clusterBits - 8),
    csizeMask: 2 ** (clusterBits - 8) - 1,
    l1Coverage: 2 ** (clusterBits + l2Bits),
  };
}

/** L1 entries needed for `size` guest bytes (QEMU's size_to_l1), exact for any u64. */
export function sizeToL1(size: bigint, clusterBits: number): bigint {
  const shift = BigInt(clusterBits + clusterBits - 3);
  return (size + (1n << shift) - 1n) >> shift;
}

function hi(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at);
}

function lo(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at + 4);
}

/** Bits 9..55 of an entry: the cluster-aligned offset of L1, L2 and standard L2 entries. */
function offsetBits(h: number, l: number): number {
  return (h & 0x00ffffff) * TWO32 + ((l & 0xfffffe00) >>> 0);
}

/** An L1 entry at byte `at`: the L2 table offset (0: none), COPIED, and whether reserved bits are set. */
export function readL1Entry(buf: Buffer, at: number): { offset: number; copied: boolean; reserved: boolean } {
  const h = hi(buf, at);
  const l = lo(buf, at);
  return {
    offset: offsetBits(h, l),
    copied: (h & 0x80000000) !== 0,
    reserved: (h & 0x7f000000) !== 0 || (l & 0x1ff) !== 0,
  };
}

export function writeL1Entry(buf: Buffer, at: number, offset: number, copied: boolean): void {
  buf.writeUInt32BE(((copied ? 0x80000000 : 0) | Math.floor(offset / TWO32)) >>> 0, at);
  buf.writeUInt32BE(offset % TWO32, at + 4);
}

/** Decodes the L2 entry at byte `at` (QEMU's qcow2_get_cluster_type order). */
export function readL2Entry(buf: Buffer, at: number, g: Geometry, version: number): L2Entry {
  const h = hi(buf, at);
  const l = lo(buf, at);
  const copied = (h & 0x80000000) !== 0;
  if ((h & 0x40000000) !== 0) {
    const offsetHighBits = g.csizeShift - 32;
    const host = (h & (2 ** offsetHighBits - 1)) * TWO32 + l;
    const sectors = ((h >>> offsetHighBits) & g.csizeMask) + 1;
    return { kind: 'compressed', host, copied, compressedLength: sectors * SECTOR - (host % SECTOR), invalid: copied };
  }
  const host = offsetBits(h, l);
  const invalid = (h & 0x3f000000) !== 0 || (l & 0x1fe) !== 0;
  if ((l & 1) !== 0 && version >= 3) {
    return { kind: host === 0 ? 'zero-plain' : 'zero-alloc', host, copied, compressedLength: 0, invalid };
  }
  // A v2 zero bit is reported as invalid by the caller; the offset still classifies the entry.
  const kind = host === 0 ? 'unallocated' : 'normal';
  return { kind, host, copied, compressedLength: 0, invalid: invalid || (l & 1) !== 0 };
}

/** Whether the raw entry has the zero flag (used to tell a v2 zero bit apart). */
export function hasZeroFlag(buf: Buffer, at: number): boolean {
  return (lo(buf, at) & 1) !== 0;
}

/** A standard L2 entry: `host` (0 for none), COPIED, zero flag. */
export function writeL2Entry(buf: Buffer, at: number, host: number, copied: boolean, zero: boolean): void {
  buf.writeUInt32BE(((copied ? 0x80000000 : 0) | Math.floor(host / TWO32)) >>> 0, at);
  buf.writeUInt32BE(((host % TWO32) | (zero ? 1 : 0)) >>> 0, at + 4);
}

/** A compressed descriptor for `length` bytes at byte offset `host` (COPIED stays clear). */
export function writeCompressedEntry(buf: Buffer, at: number, host: number, length: number, g: Geometry): void {
  const extraSectors = Math.floor((host + length - 1) / SECTOR) - Math.floor(host / SECTOR);
  const offsetHighBits = g.csizeShift - 32;
  buf.writeUInt32BE((0x40000000 | (extraSectors << offsetHighBits) | Math.floor(host / TWO32)) >>> 0, at);
  buf.writeUInt32BE(host % TWO32, at + 4);
}

/** Where offsets past what a number holds exactly are put: past any file, and aligned as the low bits say. */
const BEYOND_EXACT = 2 ** 53;
/** The largest cluster size (2 MiB): an offset's alignment depends only on its bits below this. */
const MAX_ALIGNMENT = 2 ** 21;

/**
 * A refcount-table entry: the refblock offset (bits 9..63), and whether
 * bits 0..8 are set. Unlike L1 and L2 entries (56 bits), the offset may
 * not fit a number exactly: from 2^53 on it reads as 2^53 plus its bits
 * below 2 MiB, so that it is past the end of any file and as aligned as
 * the true offset (reftableEntryHex gives the true one).
 */
export function readReftableEntry(buf: Buffer, at: number): { offset: number; reserved: boolean } {
  const h = hi(buf, at);
  const low = (lo(buf, at) & 0xfffffe00) >>> 0;
  const offset = h < BEYOND_EXACT / TWO32 ? h * TWO32 + low : BEYOND_EXACT + (low % MAX_ALIGNMENT);
  return { offset, reserved: (lo(buf, at) & 0x1ff) !== 0 };
}

/** The true refblock offset of a refcount-table entry, in hex without a prefix (as QEMU's PRIx64). */
export function reftableEntryHex(buf: Buffer, at: number): string {
  return (buf.readBigUInt64BE(at) & ~0x1ffn).toString(16);
}

export function writeReftableEntry(buf: Buffer, at: number, offset: number): void {
  buf.writeUInt32BE(Math.floor(offset / TWO32), at);
  buf.writeUInt32BE(offset % TWO32, at + 4);
}

/** The refcount of entry `index` of a refblock; sub-byte widths are packed LSB first. */
export function readRefcount(block: Buffer, index: number, order: number): number {
  switch (order) {
    case 3:
      return block[index]!;
    case 4:
      return block.readUInt16BE(index * 2);
    case 5:
      return block.readUInt32BE(index * 4);
    case 6:
      return block.readUInt32BE(index * 8) * TWO32 + block.readUInt32BE(index * 8 + 4);
    default: {
      const bits = 2 ** order;
      const bit = index * bits;
      return (block[bit >>> 3]! >>> (bit & 7)) & (2 ** bits - 1);
    }
  }
}

export function writeRefcount(block: Buffer, index: number, order: number, value: number): void {
  switch (order) {
    case 3:
      block[index] = value;
      return;
    case 4:
      block.writeUInt16BE(value, index * 2);
      return;
    case 5:
      block.writeUInt32BE(value, index * 4);
      return;
    case 6:
      block.writeUInt32BE(Math.floor(value / TWO32), index * 8);
      block.writeUInt32BE(value % TWO32, index * 8 + 4);
      return;
    default: {
      const bits = 2 ** order;
      const bit = index * bits;
      const mask = (2 ** bits - 1) << (bit & 7);
      block[bit >>> 3] = (block[bit >>> 3]! & ~mask) | ((value << (bit & 7)) & mask);
    }
  }
}

/** Largest refcount an entry holds (refcount_max), bounded by exact integers. */
export function refcountMax(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** 2 ** order - 1;
}

export function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}

/**
 * qcow2_refcount_metadata_size: the refcount blocks and table clusters
 * needed to count `clusters` clusters and themselves, found as the fixed
 * point where no more are needed; `generous` grows the table by half once
 * (room for the table to grow without moving again).
 */
export function refcountMetadataClusters(
  clusters: number,
  clusterSize: number,
  refcountOrder: number,
  generous: boolean,
): { blocks: number; table: number } {
  const refcountsPerBlock = (clusterSize * 8) / 2 ** refcountOrder;
  let covered = clusters;
  let table = 0;
  let blocks = 0;
  for (let n = 0, last = -1, grow = generous; n !== last; ) {
    last = n;
    blocks = Math.ceil((covered + table + blocks) / refcountsPerBlock);
    table = Math.ceil(blocks / (clusterSize / 8));
    n = covered + blocks + table;
    if (n === last && grow) {
      covered += Math.ceil(table / 2);
      n = 0;
      grow = false;
    }
  }
  return { blocks, table };
}
