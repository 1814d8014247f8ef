/**
 * blockdev-create for qcow2 (QEMU's qcow2_co_create with
 * BlockdevCreateOptionsQcow2): formats an existing node, named by `file` or
 * opened from its options for the creation. The steps and messages are
 * QEMU 7.2's, in its order: find the node, check the options, take the node
 * for writing, write the image. What this driver cannot make is refused at
 * the point QEMU would start on it. The bytes written are those of
 * `qemu-img create` with the same options (formatImage).
 */
import type { DriverBlockdevCreateContext, PreallocMode } from '../../core/block/driver.js';
import { BlockLayerError } from '../../core/errors.js';
import { DEFAULT_CLUSTER_SIZE, MAX_BACKING_NAME, MAX_CLUSTER_BITS, MAX_L1_BYTES, MIN_CLUSTER_BITS, sizeToL1 } from './qcow2-format.js';
import { checkedCompressionType, type CreateParams, formatImage, unsupported, V3_NEEDED } from './qcow2-create.js';
import { NodeImageFile } from './qcow2-node-file.js';
import type { Qcow2BlockdevCreateOptions } from './options.js';


/** QEMU's validate_cluster_size without extended L2 entries. */
function clusterBitsOf(clusterSize: number): number {
  const bits = Math.log2(clusterSize);
  if (!Number.isInteger(bits) || bits < MIN_CLUSTER_BITS || bits > MAX_CLUSTER_BITS) {
    throw new BlockLayerError('Cluster size must be a power of two between 512 and 2048k');
  }
  return bits;
}

/** The options checked in QEMU's order, with its messages; defaults filled in. */
function blockdevCreateParams(o: Qcow2BlockdevCreateOptions): CreateParams {
  // A negative size is 2^64 plus it for QEMU: aligned exactly when the negative number is.
  if (((o.size % 512) + 512) % 512 !== 0) throw new BlockLayerError('Image size must be a multiple of 512 bytes');
  const version = o.version === 'v2' ? 2 : 3;
  if (o['extended-l2'] === true) {
    if (version < 3) {
      throw new BlockLayerError(`Extended L2 entries are only supported with compatibility level 1.1 and above ${V3_NEEDED}`);
    }
    throw unsupported('extended L2 entries (subclusters)');
  }
  const clusterBits = clusterBitsOf(o['cluster-size'] ?? DEFAULT_CLUSTER_SIZE);
  const preallocation = o.preallocation ?? 'off';
  if (o['backing-file'] !== undefined && preallocation !== 'off') {
    throw new BlockLayerError('Backing file and preallocation can only be used at the same time if extended_l2 is on');
  }
  if (o['backing-fmt'] !== undefined && o['backing-file'] === undefined) {
    throw new BlockLayerError('Backing format cannot be used without backing file');
  }
  const lazyRefcounts = o['lazy-refcounts'] ?? false;
  if (version < 3 && lazyRefcounts) {
    throw new BlockLayerError(`Lazy refcounts only supported with compatibility level 1.1 and above ${V3_NEEDED}`);
  }
  const refcountBits = o['refcount-bits'] ?? 16;
  const refcountOrder = Math.log2(refcountBits);
  if (refcountBits > 64 || !Number.isInteger(refcountOrder)) {
    throw new BlockLayerError('Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && refcountBits !== 16) {
    throw new BlockLayerError(`Different refcount widths than 16 bits require compatibility level 1.1 or above ${V3_NEEDED}`);
  }
  if (o['data-file-raw'] === true && o['data-file'] === undefined) throw new BlockLayerError('data-file-raw requires data-file');
  if (o['data-file-raw'] === true && o['backing-file'] !== undefined) {
    throw new BlockLayerError('Backing file and data-file-raw cannot be used at the same time');
  }
  if (o['data-file'] !== undefined) {
    if (version < 3) {
      throw new BlockLayerError(`External data files are only supported with compatibility level 1.1 and above ${V3_NEEDED}`);
    }
    throw unsupported('an external data file');
  }
  const compressionType = checkedCompressionType(o['compression-type'] ?? 'zlib', version);
  if (o.encrypt !== undefined) throw unsupported('encryption');
  const params: CreateParams = {
    version,
    clusterBits,
    refcountOrder,
    size: o.size,
    lazyRefcounts,
    preallocation: preallocation as PreallocMode,
    compressionType,
  };
  if (o['backing-file'] !== undefined) params.backingFile = o['backing-file'];
  if (o['backing-fmt'] !== undefined) params.backingFormat = o['backing-fmt'];
  return params;
}

/** Failures QEMU meets while writing the image (the size, the backing file name), before anything is written here. */
function checkWritable(p: CreateParams): void {
  // QEMU's truncate takes the size as a signed number: 2^63 and more are negative.
  if (p.size < 0 || p.size >= 2 ** 63) throw new BlockLayerError('Could not resize image: Image size cannot be negative');
  if (sizeToL1(BigInt(p.size), p.clusterBits) > BigInt(MAX_L1_BYTES / 8)) {
    throw new BlockLayerError('Could not resize image: Failed to grow the L1 table: File too large');
  }
  if (p.size > Number.MAX_SAFE_INTEGER) throw unsupported('a virtual size above 2^53 bytes');
  if (p.backingFile !== undefined && Buffer.byteLength(p.backingFile) > MAX_BACKING_NAME) {
    // QEMU prints the absent format with printf's "(null)".
    throw new BlockLayerError(
      `Could not assign backing file '${p.backingFile}' with format '${p.backingFormat ?? '(null)'}': Invalid argument`,
    );
  }
}

/** The driver's blockdevCreate: find the node, check the options, take the node for writing, write the image. */
export async function blockdevCreateImage(ctx: DriverBlockdevCreateContext<Qcow2BlockdevCreateOptions>): Promise<void> {
  const node = await ctx.openNode(ctx.options.file);
  const params = blockdevCreateParams(ctx.options);
  const child = ctx.writeTo(node, 'file');
  checkWritable(params);
  await formatImage(new NodeImageFile(child), node.nodeName, params);
}
