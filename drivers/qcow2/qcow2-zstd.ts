/**
 * zstd for compressed clusters (compression type 1), through zstd-napi (the
 * zstd library's own streaming API), loaded when an image first needs it.
 * It is used as QEMU's qcow2-threads.c uses zstd: a cluster is compressed
 * in one streaming call that ends the frame, at zstd's default level, into
 * at most a cluster less one byte (or it is stored as is); a compressed
 * cluster is decompressed until exactly one cluster came out, and the
 * frame must have ended there. The bytes after the frame (the sector's
 * padding, the next cluster) are not read: QEMU records no exact size.
 * Both run on the JS thread: a cluster at a time, and never more output
 * than a cluster.
 */
import { createRequire } from 'node:module';
import { BlockIoError, BlockLayerError } from '../../core/errors.js';

type StreamResult = [remaining: number, produced: number, consumed: number];

/** The part of zstd-napi's binding used here (ZSTD_compressStream2, ZSTD_decompressStream). */
interface ZstdBinding {
  CCtx: new () => { compressStream2(dst: Uint8Array, src: Uint8Array, endOp: number): StreamResult };
  DCtx: new () => { decompressStream(dst: Uint8Array, src: Uint8Array): StreamResult };
}

/** ZSTD_e_end: compress what is given and end the frame. */
const END_FRAME = 2;

let loaded: ZstdBinding | Error | undefined;

/** The binding; if it cannot be loaded, an error that starts with `why` and says what failed. */
export function zstdBinding(why: string): ZstdBinding {
  if (loaded === undefined) {
    try {
      loaded = createRequire(import.meta.url)('zstd-napi/binding') as ZstdBinding;
    } catch (error) {
      loaded = error instanceof Error ? error : new Error(String(error));
    }
  }
  // The loader's first line says what is missing; the rest is its require stack.
  if (loaded instanceof Error) throw new BlockLayerError(`${why}: zstd is not available here (zstd-napi: ${loaded.message.split('\n')[0]})`);
  return loaded;
}

/** `data` compressed into at most `limit` bytes, or undefined when it does not fit (QEMU then stores the cluster as is). */
export function zstdCompress(data: Buffer, limit: number): Buffer | undefined {
  const out = Buffer.allocUnsafe(limit);
  let result: StreamResult;
  try {
    result = new (zstdBinding('qcow2: zstd compression').CCtx)().compressStream2(out, data, END_FRAME);
  } catch (error) {
    throw new BlockIoError('EIO', `qcow2: Could not compress cluster: ${(error as Error).message}`);
  }
  const [remaining, produced] = result;
  if (remaining === 0) return out.subarray(0, produced);
  if (remaining > limit - produced) return undefined;
  throw new BlockIoError('EIO', 'qcow2: Could not compress cluster: zstd did not end the frame');
}

/** Exactly one cluster out of the zstd frame at the start of `data`; anything else fails with EIO. */
export function zstdDecompress(data: Buffer, clusterSize: number): Buffer {
  const out = Buffer.alloc(clusterSize);
  const fail = (why: string): never => {
    throw new BlockIoError('EIO', `qcow2: Could not decompress cluster: ${why}`);
  };
  const stream = new (zstdBinding('qcow2: zstd decompression').DCtx)();
  let remaining = 0;
  for (let read = 0, written = 0; written < clusterSize; ) {
    let result: StreamResult = [0, 0, 0];
    try {
      result = stream.decompressStream(out.subarray(written), data.subarray(read));
    } catch (error) {
      fail((error as Error).message);
    }
    const [left, produced, consumed] = result;
    // A call that neither reads nor writes would be made forever: the data ended early.
    if (produced === 0 && consumed === 0) fail('the compressed data ends before the cluster does');
    remaining = left;
    read += consumed;
    written += produced;
  }
  if (remaining > 0) fail('the frame holds more than a cluster');
  return out;
}
