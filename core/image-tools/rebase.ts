/**
 * qemu-img rebase: makes an image name another backing file (or none).
 *
 * Safe mode (the default) keeps what the image reads: wherever the image
 * itself allocates nothing, the old backing chain and the new backing file
 * are compared, and where they differ the old content is written into the
 * image (zeroes written as such where the old chain ends), before the
 * header names the new file. When the new backing file is already in the
 * old chain, only what the layers above it allocate is compared, since the
 * rest reads the same either way. Unsafe mode (-u) opens the image without
 * its backing chain and changes only the name: the user vouches that the
 * content is the same.
 *
 * A relative new backing file name is taken relative to the image's
 * directory and is stored as given. Formats are never probed, so a new
 * backing file needs its format named (-F); qemu-img probes one to compare
 * and then refuses to store the name without it, with the message used here.
 */
import type { BlockLayer } from '../block-layer.js';
import type { BlockNode } from '../block/block-node.js';
import { allocatedAbove, cowChild, findBackingImage, hasProtocol, pathCombine } from '../block/backing-chain.js';
import { nodeFilename } from '../block/node-info.js';
import { BlockIoError, errorText, strerror } from '../errors.js';
import { sameSectorsRun } from './buffers.js';
import { closeImage, type ImageRef, ImageToolError, imageOptions, ioErrorText, openImage } from './image-access.js';

/** qemu-img's IO_BUF_SIZE: compared at most this much at a time. */
const CHUNK = 2 * 1024 * 1024;

export interface RebaseRequest {
  image: ImageRef;
  /** The new backing file, as it is to be stored; '' or undefined: none (only -u may leave it out). */
  backingFile?: string;
  /** Its format (required with a backing file). */
  backingFormat?: string;
  /** -u: change the name only, compare nothing. */
  unsafe?: boolean;
  /** -U: the new backing file is opened with force-share=on (the image itself is not, as in qemu-img). */
  forceShare?: boolean;
}

/** Where the new backing file is: relative to the image's directory as written, unless a URI. */
function backingPath(imageFilename: string, name: string): string {
  return hasProtocol(name) ? name : pathCombine(imageFilename, name);
}

/** The new backing node: one of the old chain if it is there (and the prefix of the chain above it), else the file opened read-only. */
interface NewBacking {
  node: BlockNode;
  /** Opened here, to be closed afterwards. */
  opened: boolean;
  /** Found in the old chain: only what lies above it can differ. */
  inChain: boolean;
}

async function openNewBacking(layer: BlockLayer, top: BlockNode, overlayName: string, name: string, format: string, forceShare: boolean): Promise<NewBacking> {
  const path = backingPath(overlayName, name);
  const inChain = await findBackingImage(top, path);
  if (inChain !== undefined) return { node: inChain, opened: false, inChain: true };
  try {
    const node = await layer.graph.open({ ...imageOptions(layer, { filename: path, format }), 'read-only': true, 'force-share': forceShare }, { readOnly: true });
    return { node, opened: true, inChain: false };
  } catch (error) {
    throw new ImageToolError(`Could not open new backing file '${name}': ${errorText(error)}`);
  }
}

/** Without -F: that the new backing file opens as a file, with the error qemu-img reports when it does not (its format is never guessed here). */
async function checkNewBackingOpens(layer: BlockLayer, overlayName: string, name: string, forceShare: boolean): Promise<void> {
  let file: BlockNode;
  try {
    file = await layer.graph.open({ driver: 'file', filename: backingPath(overlayName, name), 'read-only': true, 'force-share': forceShare }, { readOnly: true });
  } catch (error) {
    throw new ImageToolError(`Could not open new backing file '${name}': ${errorText(error)}`);
  }
  await closeImage(layer, file);
}

/** The bytes of `side` at `offset` into `buf`, zeroes past its end. */
async function readSide(side: BlockNode | undefined, offset: number, buf: Buffer, which: 'old' | 'new'): Promise<void> {
  const size = side?.length ?? 0;
  const stored = Math.max(0, Math.min(buf.length, size - offset));
  buf.fill(0, stored);
  if (stored === 0) return;
  await side!.read(offset, buf.subarray(0, stored)).catch(() => {
    throw new ImageToolError(`error while reading from ${which} backing file`);
  });
}

/** Whether `node` itself allocates `[offset, …)`, and for how many bytes of `length` that holds. */
async function allocatedHere(node: BlockNode, offset: number, length: number): Promise<{ allocated: boolean; bytes: number }> {
  try {
    const first = (await node.blockStatus(offset, length))[0];
    if (first === undefined) throw new BlockIoError('EIO');
    return { allocated: first.allocated, bytes: Math.min(length, first.offset + first.length - offset) };
  } catch (error) {
    throw new ImageToolError(`error while reading image metadata: ${ioErrorText(error)}`);
  }
}

/** Writes into `top` whatever of the old chain differs from the new backing file where `top` allocates nothing. */
async function copyDifferences(
  top: BlockNode,
  newBacking: NewBacking | undefined,
  onProgress: ((done: number, total: number) => void) | undefined,
): Promise<void> {
  const old = cowChild(top);
  const size = top.length;
  const oldBuf = Buffer.alloc(CHUNK);
  const newBuf = Buffer.alloc(CHUNK);
  for (let offset = 0, n = 0; offset < size; offset += n) {
    const here = await allocatedHere(top, offset, Math.min(CHUNK, size - offset));
    n = here.bytes;
    if (!here.allocated && newBacking?.inChain === true && old !== undefined) {
      try {
        const above = await allocatedAbove(old, newBacking.node, false, offset, n);
        n = above.bytes;
        here.allocated = !above.allocated;
      } catch (error) {
        throw new ImageToolError(`error while reading image metadata: ${ioErrorText(error)}`);
      }
    }
    if (!here.allocated) {
      // Cut where a backing file ends, as qemu-img does, so that what lies past the old one's end is written as zeroes.
      const oldSize = old?.length ?? 0;
      const oldIsZero = offset >= oldSize;
      if (!oldIsZero) n = Math.min(n, oldSize - offset);
      const newSize = newBacking?.node.length ?? 0;
      if (offset < newSize) n = Math.min(n, newSize - offset);
      await readSide(old, offset, oldBuf.subarray(0, n), 'old');
      await readSide(newBacking?.node, offset, newBuf.subarray(0, n), 'new');
      for (let at = 0; at < n; ) {
        const run = sameSectorsRun(oldBuf.subarray(0, n), newBuf.subarray(0, n), at);
        if (run.differ) {
          const write = oldIsZero ? top.writeZeroes(offset + at, run.length) : top.write(offset + at, oldBuf.subarray(at, at + run.length));
          await write.catch((error: unknown) => {
            throw new ImageToolError(`Error while writing to COW image: ${ioErrorText(error)}`);
          });
        }
        at += run.length;
      }
    }
    onProgress?.(offset + n, size);
  }
}

/** The header change, with qemu-img's messages. */
async function changeBacking(top: BlockNode, name: string | undefined, format: string | undefined): Promise<void> {
  try {
    await top.changeBackingFile(name, format);
  } catch (error) {
    const errno = error instanceof BlockIoError ? error.errno : undefined;
    const reason = errno === 'ENOSPC' ? 'No space left in the file header' : errno === undefined ? errorText(error) : strerror(errno);
    throw new ImageToolError(`Could not change the backing file to '${name ?? ''}': ${reason}`);
  }
}

export async function rebaseImage(layer: BlockLayer, request: RebaseRequest, onProgress?: (done: number, total: number) => void): Promise<void> {
  const unsafe = request.unsafe ?? false;
  if (!unsafe && request.backingFile === undefined) throw new ImageToolError('Must specify backing file (-b) or use unsafe mode (-u)');
  const name = request.backingFile === '' ? undefined : request.backingFile;
  const top = await openImage(layer, request.image, { readOnly: false, noBacking: unsafe });
  let newBacking: NewBacking | undefined;
  try {
    const format = request.backingFormat;
    // A relative name is relative to the image's file (also when options name it), as QEMU's bs->filename.
    const overlayName = await nodeFilename(top);
    if (format !== undefined && layer.drivers.get(format) === undefined) throw new ImageToolError(`Invalid format name: '${format}'`);
    if (name !== undefined && format === undefined) {
      // qemu-img opens the new backing file (probing its format) before it finds it has no format to record: a file it cannot open is reported first.
      if (!unsafe) await checkNewBackingOpens(layer, overlayName, name, request.forceShare ?? false);
      throw new ImageToolError(`Could not change the backing file to '${name}': backing format must be specified`);
    }
    if (!unsafe) {
      if (name !== undefined) newBacking = await openNewBacking(layer, top, overlayName, name, format!, request.forceShare ?? false);
      await copyDifferences(top, newBacking, onProgress);
    }
    await changeBacking(top, name, name === undefined ? undefined : format);
  } finally {
    if (newBacking?.opened === true) await closeImage(layer, newBacking.node);
    await closeImage(layer, top);
  }
}
