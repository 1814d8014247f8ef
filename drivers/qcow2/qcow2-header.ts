/**
 * The qcow2 header and its extensions: parsing with QEMU 7.2's checks and
 * messages, in QEMU's order (qcow2_do_open, qcow2_read_extensions), and
 * writing a complete header cluster as qcow2_update_header lays it out
 * (used when creating images). Every u64 field is read as a BigInt and only
 * turned into a number once it is known to be small.
 */
import { BlockIoError, BlockLayerError } from '../../core/errors.js';
import {
  COMPRESSION_ZLIB,
  EXT_BACKING_FORMAT,
  EXT_BITMAPS,
  EXT_CRYPTO_HEADER,
  EXT_DATA_FILE,
  EXT_END,
  EXT_FEATURE_TABLE,
  HEADER_AUTOCLEAR_OFFSET,
  HEADER_COMPRESSION_TYPE_OFFSET,
  INCOMPAT_COMPRESSION,
  INCOMPAT_KNOWN,
  MAX_BACKING_NAME,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
  QCOW2_MAGIC,
  V2_HEADER_LENGTH,
  V3_HEADER_LENGTH,
} from './qcow2-format.js';

export interface Qcow2Header {
  version: number;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  /** Virtual size as stored (QEMU floors it to 512 bytes when opening). */
  size: bigint;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: bigint;
  refcountTableOffset: bigint;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: bigint;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
}

/** What the header extensions say. */
export interface Qcow2Extensions {
  backingFormat?: string;
  dataFile?: string;
  cryptoHeader: boolean;
  /** The bitmap directory, when the bitmaps extension is valid and in use (autoclear bit 0). */
  bitmapDirectory?: { offset: bigint; size: bigint };
}

/** Fields `readFixedHeader` needs: the first 112 bytes of the image are enough. */
export const FIXED_HEADER_BYTES = V3_HEADER_LENGTH;

export const MAX_BITMAPS = 65535;
export const MAX_BITMAP_DIRECTORY_SIZE = 64 * 1024 * 1024;
const FEATURE_ENTRY_SIZE = 48;

/** Parses and checks the fixed header fields (no extensions yet). */
export function readFixedHeader(buf: Buffer): Qcow2Header {
  if (buf.readUInt32BE(0) !== QCOW2_MAGIC) throw new BlockLayerError('Image is not in qcow2 format');
  const version = buf.readUInt32BE(4);
  if (version < 2 || version > 3) throw new BlockLayerError(`Unsupported qcow2 version ${version}`);
  const clusterBits = buf.readUInt32BE(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new BlockLayerError(`Unsupported cluster size: 2^${clusterBits}`);
  }
  const v3 = version === 3;
  const headerLength = v3 ? buf.readUInt32BE(100) : V2_HEADER_LENGTH;
  if (v3 && headerLength < 104) throw new BlockLayerError('qcow2 header too short');
  if (headerLength > 2 ** clusterBits) throw new BlockLayerError('qcow2 header exceeds cluster size');
  const backingFileOffset = buf.readBigUInt64BE(8);
  if (backingFileOffset > BigInt(2 ** clusterBits)) throw new BlockLayerError('Invalid backing file offset');
  return {
    version,
    backingFileOffset: Number(backingFileOffset),
    backingFileSize: buf.readUInt32BE(16),
    clusterBits,
    size: buf.readBigUInt64BE(24),
    cryptMethod: buf.readUInt32BE(32),
    l1Size: buf.readUInt32BE(36),
    l1TableOffset: buf.readBigUInt64BE(40),
    refcountTableOffset: buf.readBigUInt64BE(48),
    refcountTableClusters: buf.readUInt32BE(56),
    nbSnapshots: buf.readUInt32BE(60),
    snapshotsOffset: buf.readBigUInt64BE(64),
    incompatible: v3 ? buf.readBigUInt64BE(72) : 0n,
    compatible: v3 ? buf.readBigUInt64BE(80) : 0n,
    autoclear: v3 ? buf.readBigUInt64BE(88) : 0n,
    refcountOrder: v3 ? buf.readUInt32BE(96) : 4,
    headerLength,
    compressionType: v3 && headerLength > 104 ? buf[104]! : 0,
  };
}

/** The compression type against incompatible bit 3 (validate_compression_type). */
export function checkCompressionType(header: Qcow2Header): void {
  if (header.compressionType > 1) {
    throw new BlockLayerError(`qcow2: unknown compression type: ${header.compressionType}`);
  }
  const bitSet = (header.incompatible & INCOMPAT_COMPRESSION) !== 0n;
  if (header.compressionType === 0 && bitSet) {
    throw new BlockLayerError('qcow2: Compression type incompatible feature bit must not be set');
  }
  if (header.compressionType !== 0 && !bitSet) {
    throw new BlockLayerError('qcow2: Compression type incompatible feature bit must be set');
  }
}

/** Where the extension area ends: the backing file name, or the end of cluster 0. */
function extensionEnd(header: Qcow2Header): number {
  return header.backingFileOffset !== 0 ? header.backingFileOffset : 2 ** header.clusterBits;
}

/** Walks the extensions of header cluster `cluster0`, calling `visit` for each until the end marker. */
function walkExtensions(cluster0: Buffer, header: Qcow2Header, visit: (type: number, data: Buffer) => void): void {
  const end = extensionEnd(header);
  let offset = header.headerLength;
  while (offset < end) {
    // Bytes of the cluster past the end of a short file read as zeroes, which is the end marker.
    const type = offset + 8 <= cluster0.length ? cluster0.readUInt32BE(offset) : EXT_END;
    const length = offset + 8 <= cluster0.length ? cluster0.readUInt32BE(offset + 4) : 0;
    offset += 8;
    if (offset > end || length > end - offset) throw new BlockLayerError('Header extension too large');
    if (type === EXT_END) return;
    visit(type, cluster0.subarray(offset, offset + length));
    offset += (length + 7) & ~7;
  }
}

/** The names of the unknown incompatible bits in `mask`, as report_unsupported_feature words them. */
export function unsupportedFeatures(cluster0: Buffer, header: Qcow2Header): string {
  let mask = header.incompatible & ~INCOMPAT_KNOWN;
  const names: string[] = [];
  let table: Buffer | undefined;
  try {
    walkExtensions(cluster0, header, (type, data) => {
      if (type === EXT_FEATURE_TABLE) table = data;
    });
  } catch {
    // QEMU ignores a broken extension area while building this message.
  }
  for (let at = 0; table !== undefined && at + FEATURE_ENTRY_SIZE <= table.length; at += FEATURE_ENTRY_SIZE) {
    const nameBytes = table.subarray(at + 2, at + FEATURE_ENTRY_SIZE);
    const nul = nameBytes.indexOf(0);
    const name = nameBytes.subarray(0, nul === -1 ? nameBytes.length : nul).toString('latin1');
    if (name === '') break;
    const bit = 1n << BigInt(table[at + 1]!);
    if (table[at] === 0 && (mask & bit) !== 0n) {
      names.push(name);
      mask &= ~bit;
    }
  }
  if (mask !== 0n) names.push(`Unknown incompatible feature: ${mask.toString(16)}`);
  return `Unsupported qcow2 feature(s): ${names.join(', ')}`;
}

/** Reads the extensions with QEMU's checks. */
export function readExtensions(cluster0: Buffer, header: Qcow2Header): Qcow2Extensions {
  const result: Qcow2Extensions = { cryptoHeader: false };
  walkExtensions(cluster0, header, (type, data) => {
    switch (type) {
      case EXT_BACKING_FORMAT:
        if (data.length >= 16) {
          throw new BlockLayerError(`ERROR: ext_backing_format: len=${data.length} too large (>=16)`);
        }
        result.backingFormat = data.toString('latin1');
        break;
      case EXT_CRYPTO_HEADER:
        if (header.cryptMethod !== 2) {
          throw new BlockLayerError('CRYPTO header extension only expected with LUKS encryption method');
        }
        result.cryptoHeader = true;
        break;
      case EXT_BITMAPS:
        readBitmapsExtension(data, header, result);
        break;
      case EXT_DATA_FILE:
        result.dataFile = data.toString('utf8');
        break;
      default:
        // Unknown extensions (and the feature table) are kept as they are: this driver never rewrites them.
        break;
    }
  });
  return result;
}

function readBitmapsExtension(data: Buffer, header: Qcow2Header, result: Qcow2Extensions): void {
  if (data.length !== 24) throw new BlockLayerError('bitmaps_ext: Invalid extension length');
  // Without autoclear bit 0 the bitmaps are stale; QEMU ignores the extension.
  if ((header.autoclear & 1n) === 0n) return;
  if (data.readUInt32BE(4) !== 0) throw new BlockLayerError('bitmaps_ext: Reserved field is not zero');
  const count = data.readUInt32BE(0);
  if (count > MAX_BITMAPS) {
    throw new BlockLayerError(
      `bitmaps_ext: Image has ${count} bitmaps, exceeding the QEMU supported maximum of ${MAX_BITMAPS}`,
    );
  }
  if (count === 0) throw new BlockLayerError('found bitmaps extension with zero bitmaps');
  const size = data.readBigUInt64BE(8);
  const offset = data.readBigUInt64BE(16);
  if (offset % BigInt(2 ** header.clusterBits) !== 0n) {
    throw new BlockLayerError('bitmaps_ext: invalid bitmap directory offset');
  }
  if (size > BigInt(MAX_BITMAP_DIRECTORY_SIZE)) {
    throw new BlockLayerError(
      `bitmaps_ext: bitmap directory size (${size}) exceeds the maximum supported size (${MAX_BITMAP_DIRECTORY_SIZE})`,
    );
  }
  result.bitmapDirectory = { offset, size };
}

/** The backing file name stored in cluster 0, with QEMU's bounds. */
export function readBackingName(cluster0: Buffer, header: Qcow2Header): string | undefined {
  if (header.backingFileOffset === 0) return undefined;
  const length = header.backingFileSize;
  if (length > Math.min(MAX_BACKING_NAME, 2 ** header.clusterBits - header.backingFileOffset)) {
    throw new BlockLayerError('Backing file name too long');
  }
  const name = Buffer.alloc(length);
  cluster0.copy(name, 0, header.backingFileOffset, header.backingFileOffset + length);
  return name.toString('utf8');
}

/** The eight feature names QEMU 7.2 writes into the feature name table, in its order. */
const FEATURE_NAMES: [type: number, bit: number, name: string][] = [
  [0, 0, 'dirty bit'],
  [0, 1, 'corrupt bit'],
  [0, 2, 'external data file'],
  [0, 3, 'compression type'],
  [0, 4, 'extended L2 entries'],
  [1, 0, 'lazy refcounts'],
  [2, 0, 'bitmaps'],
  [2, 1, 'raw external data'],
];

/** What a complete header records; the rest of a fresh header is zero. */
export interface HeaderImage {
  version: number;
  clusterBits: number;
  size: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  refcountOrder: number;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  backingFile?: string;
  backingFormat?: string;
  /** COMPRESSION_ZLIB (the default) or COMPRESSION_ZSTD; v3 only. */
  compressionType?: number;
}

function putExtension(cluster: Buffer, at: number, type: number, data: Buffer): number {
  cluster.writeUInt32BE(type, at);
  cluster.writeUInt32BE(data.length, at + 4);
  data.copy(cluster, at + 8);
  return at + 8 + ((data.length + 7) & ~7);
}

/** Header cluster 0 exactly as qcow2_update_header writes it for a new image. */
export function buildHeaderCluster(image: HeaderImage): Buffer {
  const clusterSize = 2 ** image.clusterBits;
  const cluster = Buffer.alloc(clusterSize);
  const v3 = image.version >= 3;
  cluster.writeUInt32BE(QCOW2_MAGIC, 0);
  cluster.writeUInt32BE(image.version, 4);
  cluster.writeUInt32BE(image.clusterBits, 20);
  cluster.writeBigUInt64BE(BigInt(image.size), 24);
  cluster.writeUInt32BE(image.l1Size, 36);
  cluster.writeBigUInt64BE(BigInt(image.l1TableOffset), 40);
  cluster.writeBigUInt64BE(BigInt(image.refcountTableOffset), 48);
  cluster.writeUInt32BE(image.refcountTableClusters, 56);
  let at = V2_HEADER_LENGTH;
  if (v3) {
    cluster.writeBigUInt64BE(image.incompatible, 72);
    cluster.writeBigUInt64BE(image.compatible, 80);
    cluster.writeBigUInt64BE(image.autoclear, 88);
    cluster.writeUInt32BE(image.refcountOrder, 96);
    cluster.writeUInt32BE(V3_HEADER_LENGTH, 100);
    cluster[HEADER_COMPRESSION_TYPE_OFFSET] = image.compressionType ?? COMPRESSION_ZLIB;
    at = V3_HEADER_LENGTH;
  }
  if (image.backingFormat !== undefined) {
    at = putExtension(cluster, at, EXT_BACKING_FORMAT, Buffer.from(image.backingFormat, 'latin1'));
  }
  // QEMU leaves the table out of clusters of 4 KiB or less, to keep room for a backing file name.
  if (v3 && clusterSize > 4096) {
    const table = Buffer.alloc(FEATURE_NAMES.length * FEATURE_ENTRY_SIZE);
    FEATURE_NAMES.forEach(([type, bit, name], i) => {
      table[i * FEATURE_ENTRY_SIZE] = type;
      table[i * FEATURE_ENTRY_SIZE + 1] = bit;
      table.write(name, i * FEATURE_ENTRY_SIZE + 2, 'latin1');
    });
    at = putExtension(cluster, at, EXT_FEATURE_TABLE, table);
  }
  at = putExtension(cluster, at, EXT_END, Buffer.alloc(0));
  if (image.backingFile !== undefined) {
    const name = Buffer.from(image.backingFile, 'utf8');
    if (at + name.length > clusterSize) throw new BlockLayerError('Backing file name too long');
    cluster.writeBigUInt64BE(BigInt(at), 8);
    cluster.writeUInt32BE(name.length, 16);
    name.copy(cluster, at);
  }
  return cluster;
}

/** An extension as the image stores it. */
export interface HeaderExtension {
  type: number;
  data: Buffer;
}

/** The extensions of header cluster `cluster0`, in their order (the end marker left out). */
export function listExtensions(cluster0: Buffer, header: Qcow2Header): HeaderExtension[] {
  const list: HeaderExtension[] = [];
  walkExtensions(cluster0, header, (type, data) => list.push({ type, data: Buffer.from(data) }));
  return list;
}

/**
 * Header cluster 0 naming another backing file (or none), laid out as
 * qcow2_update_header writes it: the fixed header as it stands (unknown
 * header fields kept), then the backing format, the external data file
 * name, the encryption header pointer, the feature table (v3, clusters
 * over 4 KiB), the bitmaps extension (while autoclear bit 0 says it is
 * valid, or `change.bitmaps` where given), unknown extensions as they
 * were, the end marker and the backing file name; the rest of the cluster
 * zero.
 * Throws the errno QEMU returns: EINVAL for a name over 1023 bytes, ENOSPC
 * when it does not fit. `change.fixed` replaces the fixed header (amend's
 * new version and feature bits); the extensions follow its version and
 * autoclear bits.
 */
export function headerWithBacking(
  cluster0: Buffer,
  header: Qcow2Header,
  backing: { name: string | undefined; format: string | undefined },
  change: { bitmaps?: Buffer | undefined; fixed?: Buffer } = {},
): Buffer {
  const clusterSize = 2 ** header.clusterBits;
  const fixed = change.fixed ?? cluster0.subarray(0, header.headerLength);
  const version = fixed.readUInt32BE(4);
  const autoclear = version >= 3 ? fixed.readBigUInt64BE(HEADER_AUTOCLEAR_OFFSET) : 0n;
  const name = backing.name === undefined ? undefined : Buffer.from(backing.name, 'utf8');
  if (name !== undefined && name.length > MAX_BACKING_NAME) throw new BlockIoError('EINVAL');
  const kept = listExtensions(cluster0, header);
  const ofType = (type: number) => kept.filter((e) => e.type === type);
  const known = new Set([EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_CRYPTO_HEADER, EXT_FEATURE_TABLE, EXT_BITMAPS]);
  const extensions: HeaderExtension[] = [];
  if (backing.format !== undefined && name !== undefined) {
    extensions.push({ type: EXT_BACKING_FORMAT, data: Buffer.from(backing.format, 'latin1') });
  }
  extensions.push(...ofType(EXT_DATA_FILE), ...ofType(EXT_CRYPTO_HEADER));
  if (version >= 3 && clusterSize > 4096) extensions.push({ type: EXT_FEATURE_TABLE, data: featureNameTable() });
  // Bitmaps are only valid with autoclear bit 0; without it QEMU has none to write back.
  if ('bitmaps' in change) {
    if (change.bitmaps !== undefined) extensions.push({ type: EXT_BITMAPS, data: change.bitmaps });
  } else if ((autoclear & 1n) !== 0n) {
    extensions.push(...ofType(EXT_BITMAPS));
  }
  extensions.push(...kept.filter((e) => !known.has(e.type)));
  const cluster = Buffer.alloc(clusterSize);
  fixed.copy(cluster, 0);
  let at = fixed.length;
  for (const extension of [...extensions, { type: EXT_END, data: Buffer.alloc(0) }]) {
    if (at + 8 + extension.data.length > clusterSize) throw new BlockIoError('ENOSPC');
    at = putExtension(cluster, at, extension.type, extension.data);
  }
  cluster.writeBigUInt64BE(0n, 8);
  cluster.writeUInt32BE(0, 16);
  if (name !== undefined) {
    if (at + name.length > clusterSize) throw new BlockIoError('ENOSPC');
    cluster.writeBigUInt64BE(BigInt(at), 8);
    cluster.writeUInt32BE(name.length, 16);
    name.copy(cluster, at);
  }
  return cluster;
}

/** The feature name table QEMU 7.2 writes. */
function featureNameTable(): Buffer {
  const table = Buffer.alloc(FEATURE_NAMES.length * FEATURE_ENTRY_SIZE);
  FEATURE_NAMES.forEach(([type, bit, name], i) => {
    table[i * FEATURE_ENTRY_SIZE] = type;
    table[i * FEATURE_ENTRY_SIZE + 1] = bit;
    table.write(name, i * FEATURE_ENTRY_SIZE + 2, 'latin1');
  });
  return table;
}
