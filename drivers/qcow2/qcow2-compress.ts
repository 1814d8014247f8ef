/**
 * Compressed clusters, in the image's compression type: zlib (type 0, raw
 * deflate with a 4 KiB window, as QEMU's qcow2_compress/qcow2_decompress,
 * on the libuv thread pool so that other requests go on) or zstd (type 1,
 * qcow2-zstd.ts).
 */
import { promisify } from 'node:util';
import { constants, deflateRaw, inflateRaw } from 'node:zlib';
import { BlockIoError } from '../../core/errors.js';
import { COMPRESSION_ZSTD } from './qcow2-format.js';
import { zstdCompress, zstdDecompress } from './qcow2-zstd.js';

const deflate = promisify(deflateRaw);
const inflate = promisify(inflateRaw);

/** `data` compressed, or undefined when that would not save anything (QEMU then stores the cluster as is). */
export async function compressCluster(data: Buffer, compressionType: number): Promise<Buffer | undefined> {
  if (compressionType === COMPRESSION_ZSTD) return zstdCompress(data, data.length - 1);
  const compressed = await deflate(data, { windowBits: 12, memLevel: 9, level: constants.Z_DEFAULT_COMPRESSION });
  return compressed.length < data.length ? compressed : undefined;
}

/**
 * Decompresses exactly one cluster. Bytes after the end of the stream belong
 * to the next compressed cluster and are ignored; a stream that is corrupt,
 * ends early or would produce more than a cluster fails with EIO.
 */
export async function decompressCluster(data: Buffer, clusterSize: number, compressionType: number): Promise<Buffer> {
  if (compressionType === COMPRESSION_ZSTD) return zstdDecompress(data, clusterSize);
  let out: Buffer;
  try {
    out = await inflate(data, { maxOutputLength: clusterSize, finishFlush: constants.Z_SYNC_FLUSH });
  } catch (error) {
    throw new BlockIoError('EIO', `qcow2: Could not decompress cluster: ${(error as Error).message}`);
  }
  if (out.length !== clusterSize) {
    throw new BlockIoError('EIO', `qcow2: Compressed cluster decompressed to ${out.length} bytes instead of ${clusterSize}`);
  }
  return out;
}
