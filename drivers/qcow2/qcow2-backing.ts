/**
 * The backing file named in the image header, opened read-only with the
 * format the header records: never probed (a raw image that looks like
 * qcow2 is an attack, CVE-2008-2004). Relative names are relative to the
 * image's own directory, joined to the image's name as QEMU's path_combine
 * joins them (so the backing node is named as qemu-img names it, relative
 * if the image was); names with a protocol prefix or json: are
 * refused. Chains are at most 64 images deep and loops are detected: the
 * images being opened above are carried along the (async) open call chain.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { realpath } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { hasProtocol, pathCombine } from '../../core/block/backing-chain.js';
import type { DriverOpenContext } from '../../core/block/driver.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import { BlockLayerError } from '../../core/errors.js';

export const MAX_BACKING_DEPTH = 64;

/** Files of the images whose opening is waiting for this backing open, outermost first. */
const openingChain = new AsyncLocalStorage<readonly string[]>();

/** A file's identity for loop detection: its real path, or the name when it cannot be resolved. */
async function identity(path: string): Promise<string> {
  return realpath(path).catch(() => path);
}

export interface BackingFromHeader {
  name: string | undefined;
  format: string | undefined;
}

/**
 * The backing node: the `backing` option if given (a node, or null for
 * none), else the header's backing file, else none.
 */
export async function openBacking(
  ctx: Pick<DriverOpenContext<unknown>, 'givenOptions' | 'children' | 'openChild'>,
  imageName: string,
  imagePath: string,
  header: BackingFromHeader,
): Promise<NodeChild | undefined> {
  if ('backing' in ctx.givenOptions) return ctx.children.get('backing');
  const { name, format } = header;
  if (name === undefined) return undefined;
  if (format === undefined) {
    throw new BlockLayerError(
      `Backing file '${name}' of image '${imageName}' has no backing format, and blocklayer does not probe formats; ` +
        `give the 'backing' option, or record the format with 'qemu-img rebase -u -b ${name} -F FORMAT'`,
    );
  }
  if (hasProtocol(name)) {
    throw new BlockLayerError(`Backing file name '${name}' of image '${imageName}' names a protocol; only file names are supported`);
  }
  if (!isAbsolute(name) && (imagePath.startsWith('json:') || hasProtocol(imagePath))) {
    throw new BlockLayerError(`Cannot use relative backing file names for '${imagePath}'`);
  }
  const filename = pathCombine(imagePath, name);
  const chain = [...(openingChain.getStore() ?? []), await identity(imagePath)];
  if (chain.length >= MAX_BACKING_DEPTH) {
    throw new BlockLayerError(`Backing chain of image '${imageName}' is deeper than ${MAX_BACKING_DEPTH} images`);
  }
  if (chain.includes(await identity(filename))) {
    throw new BlockLayerError(`Backing file '${name}' of image '${imageName}' is part of its own backing chain (a loop)`);
  }
  try {
    return await openingChain.run(chain, () =>
      ctx.openChild('backing', { driver: format, file: { driver: 'file', filename } }, true),
    );
  } catch (error) {
    throw new BlockLayerError(`Could not open backing file: ${(error as Error).message}`);
  }
}
