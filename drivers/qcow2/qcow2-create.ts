/**
 * Creating an image as qemu-img create -f qcow2 does (qcow2_co_create):
 * a header cluster, a one-cluster refcount table and an empty refcount
 * block are written; the image is then opened in place, its first three
 * clusters allocated, grown to the wanted size (which allocates the L1
 * table) and optionally preallocated; finally the complete header (feature
 * name table, backing file and format) is written. The result is byte for
 * byte what QEMU 7.2 writes for the same options. `formatImage` does the
 * writing, into a new file here or into a node for blockdev-create
 * (qcow2-blockdev-create.ts).
 */
import { open, stat } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { type DriverCreateContext, isPreallocMode, type PreallocMode } from '../../core/block/driver.js';
import { BlockLayerError, systemErrorText } from '../../core/errors.js';
import {
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_ZLIB,
  COMPRESSION_ZSTD,
  DEFAULT_CLUSTER_SIZE,
  INCOMPAT_COMPRESSION,
  MAX_BACKING_NAME,
  MAX_CLUSTER_BITS,
  MAX_L1_BYTES,
  MIN_CLUSTER_BITS,
  sizeToL1,
  V3_HEADER_LENGTH,
  writeReftableEntry,
} from './qcow2-format.js';
import { buildHeaderCluster, FIXED_HEADER_BYTES, type HeaderImage, readFixedHeader } from './qcow2-header.js';
import type { ImageFile } from './qcow2-image.js';
import { LocalImageFile } from './qcow2-local-file.js';
import { NodeImageFile } from './qcow2-node-file.js';
import { buildImage } from './qcow2-open.js';
import { allocateClusters } from './qcow2-refcount.js';
import { zstdBinding } from './qcow2-zstd.js';
import { syncMetadata } from './qcow2-sync.js';
import { growImage } from './qcow2-truncate.js';
import type { Qcow2CreateOptions } from './options.js';

/** What the image is made of, checked and with defaults filled in. */
export interface CreateParams {
  version: number;
  clusterBits: number;
  refcountOrder: number;
  size: number;
  backingFile?: string;
  backingFormat?: string;
  lazyRefcounts: boolean;
  preallocation: PreallocMode;
  /** COMPRESSION_ZLIB or COMPRESSION_ZSTD (v3 only). */
  compressionType: number;
}

/** The virtual size of the backing file, for images created without a size (QEMU opens the backing file for it). */
async function backingSize(filename: string, backingFile: string, format: string): Promise<number> {
  const path = isAbsolute(backingFile) ? backingFile : resolve(dirname(filename), backingFile);
  const failure = (error: unknown) => new BlockLayerError(`Could not open backing file '${path}': ${systemErrorText(error)}`);
  if (format === 'raw') return (await stat(path).catch((e: unknown) => Promise.reject(failure(e)))).size;
  if (format !== 'qcow2') {
    throw new BlockLayerError(`Image creation needs a size parameter (the size of a '${format}' backing file is not known)`);
  }
  const handle = await open(path, 'r').catch((e: unknown) => Promise.reject(failure(e)));
  try {
    const fixed = Buffer.alloc(FIXED_HEADER_BYTES);
    await handle.read(fixed, 0, fixed.length, 0);
    return Number((readFixedHeader(fixed).size / 512n) * 512n);
  } finally {
    await handle.close();
  }
}

/** The cluster size option as log2, checked (qcow2_opt_get_cluster_size_del). */
export function checkedClusterBits(o: Pick<Qcow2CreateOptions, 'cluster_size'>): number {
  const clusterBits = Math.log2(o.cluster_size ?? DEFAULT_CLUSTER_SIZE);
  if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new BlockLayerError('Cluster size must be a power of two between 512 and 2048k');
  }
  return clusterBits;
}

/**
 * The refcount width option as log2, checked for `version`; `upgrade` is
 * how the message says to ask for v3 (qemu-img create's path says
 * `version=v3`, qemu-img measure's `compat=1.1`).
 */
export function checkedRefcountOrder(o: Pick<Qcow2CreateOptions, 'refcount_bits'>, version: number, upgrade: string): number {
  const refcountBits = o.refcount_bits ?? 16;
  const refcountOrder = Math.log2(refcountBits);
  if (refcountBits > 64 || !Number.isInteger(refcountOrder)) {
    throw new BlockLayerError('Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && refcountBits !== 16) {
    throw new BlockLayerError(`Different refcount widths than 16 bits require compatibility level 1.1 or above (use ${upgrade} or greater)`);
  }
  return refcountOrder;
}

/** Refusals of what QEMU makes and this driver does not. */
export function unsupported(what: string): BlockLayerError {
  return new BlockLayerError(`blocklayer's qcow2 driver cannot create images with ${what}`);
}

export const V3_NEEDED = '(use version=v3 or greater)';

/** The compression type of a new image, `compression` being zlib or zstd (checked before): zstd needs v3 and the zstd library, as qcow2_co_create checks it. */
export function checkedCompressionType(compression: string, version: number): number {
  if (compression === 'zlib') return COMPRESSION_ZLIB;
  if (version < 3) throw new BlockLayerError(`Non-zlib compression type is only supported with compatibility level 1.1 and above ${V3_NEEDED}`);
  zstdBinding('Cannot create an image with zstd compression');
  return COMPRESSION_ZSTD;
}

/** -o compat as qemu-img create reads it: QEMU's names 0.10 and 1.1, or the QAPI ones, v2 and v3. */
function createVersion(compat: string | undefined): 2 | 3 {
  if (compat === '0.10' || compat === 'v2') return 2;
  if (compat === undefined || compat === '1.1' || compat === 'v3') return 3;
  throw new BlockLayerError(`Parameter 'version' does not accept value '${compat}'`);
}

/** Checks the options in QEMU's order (qcow2_co_create's) and with its messages; fills in defaults. */
async function createParams(o: Qcow2CreateOptions): Promise<CreateParams> {
  if (o.backing_file !== undefined && o.backing_fmt === undefined) {
    throw new BlockLayerError('Backing file specified without backing format');
  }
  const version = createVersion(o.compat);
  const compression = o.compression_type ?? 'zlib';
  if (compression !== 'zlib' && compression !== 'zstd') {
    throw new BlockLayerError(`Parameter 'compression-type' does not accept value '${compression}'`);
  }
  const preallocation = o.preallocation ?? 'off';
  if (!isPreallocMode(preallocation)) throw new BlockLayerError(`Parameter 'preallocation' does not accept value '${preallocation}'`);
  if (o.extended_l2 === true) {
    if (version < 3) {
      throw new BlockLayerError(`Extended L2 entries are only supported with compatibility level 1.1 and above ${V3_NEEDED}`);
    }
    throw unsupported('extended L2 entries (subclusters)');
  }
  const clusterBits = checkedClusterBits(o);
  if (o.backing_file !== undefined && preallocation !== 'off') {
    throw new BlockLayerError('Backing file and preallocation can only be used at the same time if extended_l2 is on');
  }
  if (o.backing_fmt !== undefined && o.backing_file === undefined) {
    throw new BlockLayerError('Backing format cannot be used without backing file');
  }
  const lazyRefcounts = o.lazy_refcounts ?? false;
  if (version < 3 && lazyRefcounts) {
    throw new BlockLayerError(`Lazy refcounts only supported with compatibility level 1.1 and above ${V3_NEEDED}`);
  }
  const refcountOrder = checkedRefcountOrder(o, version, 'version=v3');
  const compressionType = checkedCompressionType(compression, version);
  let size = o.size;
  if (size === undefined && o.backing_file !== undefined) size = await backingSize(o.filename, o.backing_file, o.backing_fmt!);
  if (size === undefined) throw new BlockLayerError('Image creation needs a size parameter');
  size = Math.ceil(size / 512) * 512;
  if (sizeToL1(BigInt(size), clusterBits) > BigInt(MAX_L1_BYTES / 8)) {
    throw new BlockLayerError("The image size is too large for file format 'qcow2' (try using a larger cluster size)");
  }
  if (o.backing_file !== undefined && Buffer.byteLength(o.backing_file) > MAX_BACKING_NAME) {
    throw new BlockLayerError(`Could not assign backing file '${o.backing_file}' with format '${o.backing_fmt}': Invalid argument`);
  }
  const params: CreateParams = { version, clusterBits, refcountOrder, size, lazyRefcounts, preallocation, compressionType };
  if (o.backing_file !== undefined) params.backingFile = o.backing_file;
  if (o.backing_fmt !== undefined) params.backingFormat = o.backing_fmt;
  return params;
}

function headerImage(p: CreateParams, at: { size: number; l1Size: number; l1Offset: number; reftableOffset: number; reftableClusters: number }): HeaderImage {
  const image: HeaderImage = {
    version: p.version,
    clusterBits: p.clusterBits,
    size: at.size,
    l1Size: at.l1Size,
    l1TableOffset: at.l1Offset,
    refcountTableOffset: at.reftableOffset,
    refcountTableClusters: at.reftableClusters,
    refcountOrder: p.refcountOrder,
    incompatible: p.compressionType === COMPRESSION_ZLIB ? 0n : INCOMPAT_COMPRESSION,
    compatible: p.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0n,
    autoclear: 0n,
    compressionType: p.compressionType,
  };
  if (p.backingFile !== undefined) image.backingFile = p.backingFile;
  if (p.backingFormat !== undefined) image.backingFormat = p.backingFormat;
  return image;
}

/** The file an image is being written into: the I/O of an image file, and one real flush at the end. */
export interface CreationFile extends ImageFile {
  sync(): Promise<void>;
}

/**
 * Writes a new image into `file`, which is empty (or holds bytes the image
 * overwrites where it needs them, as QEMU leaves them); `name` names it in
 * messages.
 */
export async function formatImage(file: CreationFile, name: string, p: CreateParams): Promise<void> {
  const cs = 2 ** p.clusterBits;
  const start = { size: 0, l1Size: 0, l1Offset: 0, reftableOffset: cs, reftableClusters: 1 };
  const reftable = Buffer.alloc(cs);
  writeReftableEntry(reftable, 0, 2 * cs);
  await file.write(0, Buffer.concat([buildHeaderCluster(headerImage(p, start)), reftable, Buffer.alloc(cs)]));
  const header = readFixedHeader(buildHeaderCluster(headerImage(p, start)).subarray(0, V3_HEADER_LENGTH));
  const image = buildImage({
    name,
    file,
    writable: true,
    header,
    size: 0,
    l1: Buffer.alloc(0),
    reftable,
    snapshots: { byteSize: 0, l1Tables: [], infos: [], entries: [] },
    bitmapDirectory: undefined,
    // A larger refcount cache than an open image's: growing a new image scans its refcounts repeatedly.
    options: { file: name, 'lazy-refcounts': false, 'cache-clean-interval': 0, 'refcount-cache-size': 1 << 23 },
    fileAllocation: async () => undefined,
  });
  await image.lock.run(async () => {
    if ((await allocateClusters(image, 3)) !== 0) throw new BlockLayerError('qcow2: the first clusters of a new image are in use');
    await growImage(image, p.size, p.preallocation);
    await syncMetadata(image);
  });
  const final = {
    size: p.size,
    l1Size: image.l1Size,
    l1Offset: image.l1Offset,
    reftableOffset: image.reftableOffset,
    reftableClusters: image.reftableClusters,
  };
  await file.write(0, buildHeaderCluster(headerImage(p, final)));
  await file.sync();
}

/** qemu-img create -f qcow2 (and drive-backup's new target): the file, then the image in it. */
export async function createImage({ options, createWith, writeCreated }: DriverCreateContext<Qcow2CreateOptions>): Promise<void> {
  const p = await createParams(options);
  const file: Record<string, unknown> = { filename: options.filename, size: 0 };
  if (options.nocow !== undefined) file.nocow = options.nocow;
  if (options.extent_size_hint !== undefined) file.extent_size_hint = options.extent_size_hint;
  await createWith('file', file);
  if (p.preallocation === 'falloc' || p.preallocation === 'full') {
    // The file reserves or writes the data clusters itself: the image is written through a node of it.
    await writeCreated('file', options.filename, (child) => formatImage(new NodeImageFile(child), options.filename, p));
    return;
  }
  const handle = await open(options.filename, 'r+');
  try {
    await formatImage(await LocalImageFile.open(handle), options.filename, p);
  } finally {
    await handle.close();
  }
}
