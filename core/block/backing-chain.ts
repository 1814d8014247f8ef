/**
 * Walking a node's backing chain, as QEMU's block.c does for the jobs that
 * work on chains (stream, commit): the next node down (a filter's filtered
 * child, else a format node's `backing`), filters skipped, the overlay of
 * a node, a backing file found by name, and whether a range is allocated
 * in the layers above a base (bdrv_is_allocated_above). Status queries are
 * made as a job's nested requests, so a drained node does not hold them.
 */
import { realpath } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import type { BlockNode } from './block-node.js';
import { nodeFilename } from './node-info.js';

/** bdrv_filter_bs: the child a filter passes its I/O to; undefined for a non-filter. */
export function filteredChild(node: BlockNode): BlockNode | undefined {
  if (node.driver.kind !== 'filter') return undefined;
  const spec = node.driver.children?.find((c) => c.filtered);
  return spec === undefined ? undefined : node.children.get(spec.name)?.node;
}

/** bdrv_cow_bs: the backing node of a non-filter. */
export function cowChild(node: BlockNode): BlockNode | undefined {
  return node.driver.kind === 'filter' ? undefined : node.children.get('backing')?.node;
}

/** bdrv_filter_or_cow_bs: the next node down the chain. */
export function nextInChain(node: BlockNode): BlockNode | undefined {
  return filteredChild(node) ?? cowChild(node);
}

/** bdrv_skip_filters: the first non-filter at or below `node`. */
export function skipFilters(node: BlockNode): BlockNode {
  let current = node;
  for (let below = filteredChild(current); below !== undefined; below = filteredChild(current)) current = below;
  return current;
}

/** bdrv_skip_implicit_filters: below the filters a job put in without a name the user knows. */
export function skipImplicitFilters(node: BlockNode): BlockNode {
  let current = node;
  for (let below = filteredChild(current); current.implicit && below !== undefined; below = filteredChild(current)) current = below;
  return current;
}

/** bdrv_backing_chain_next: the next non-filter image down the chain. */
export function backingChainNext(node: BlockNode): BlockNode | undefined {
  const cow = cowChild(skipFilters(node));
  return cow === undefined ? undefined : skipFilters(cow);
}

/** bdrv_chain_contains: `node` is `top` or below it, through filters and backing links. */
export function chainContains(top: BlockNode, node: BlockNode): boolean {
  for (let current: BlockNode | undefined = top; current !== undefined; current = nextInChain(current)) {
    if (current === node) return true;
  }
  return false;
}

/**
 * bdrv_find_overlay: the image in `top`'s chain whose backing image (filters
 * skipped) is `node`; with `node` undefined, the bottom-most image
 * (bdrv_find_base).
 */
export function findOverlay(top: BlockNode, node: BlockNode | undefined): BlockNode | undefined {
  const wanted = node === undefined ? undefined : skipFilters(node);
  for (let active: BlockNode | undefined = skipFilters(top); active !== undefined; ) {
    const next = backingChainNext(active);
    if (next === wanted) return active;
    active = next;
  }
  return undefined;
}

/** QEMU's path_has_protocol: a colon before any slash. */
export function hasProtocol(name: string): boolean {
  const stop = name.search(/[:/\\]/);
  return stop >= 0 && name[stop] === ':';
}

/** QEMU's path_combine: `name` after the directory part of `base` as written (no normalisation), unless absolute. */
export function pathCombine(base: string, name: string): string {
  if (isAbsolute(name)) return name;
  return base.slice(0, base.lastIndexOf('/') + 1) + name;
}

/** A local file's canonical path, if it exists. */
async function canonical(path: string): Promise<string | undefined> {
  if (path.startsWith('json:') || hasProtocol(path)) return undefined;
  return realpath(path).catch(() => undefined);
}

/**
 * bdrv_find_backing_image: the image below `top` whose file `name` names:
 * exactly as its node's file name or as the overlay's image records it, or,
 * for a relative name, relative to the overlay's directory (compared by
 * canonical path, as QEMU compares them).
 */
export async function findBackingImage(top: BlockNode, name: string): Promise<BlockNode | undefined> {
  for (let current = skipFilters(top); cowChild(current) !== undefined; ) {
    const below = backingChainNext(current)!;
    const belowName = await nodeFilename(below);
    const recorded = (await current.driver.describe?.(current.driverState))?.backingFilename;
    if (name === belowName || name === recorded) return below;
    if (!hasProtocol(name)) {
      const overlayName = await nodeFilename(current);
      const absolute = overlayName.startsWith('json:') || hasProtocol(overlayName) ? name : pathCombine(overlayName, name);
      const wanted = await canonical(absolute);
      if (wanted !== undefined && wanted === (await canonical(belowName))) return below;
    }
    current = below;
  }
  return undefined;
}

/** The first run of a range, and whether a layer above the base allocates it. */
export interface AllocationRun {
  allocated: boolean;
  bytes: number;
}

/**
 * bdrv_is_allocated_above: whether `[offset, offset + bytes)` starts with
 * data some image from `top` down to `base` (`base` itself only with
 * `includeBase`; undefined: the whole chain) allocates, and for how many
 * bytes that answer holds. A layer shorter than the range counts as
 * allocating (reading as zeroes) past its end, as in QEMU.
 */
export async function allocatedAbove(
  top: BlockNode,
  base: BlockNode | undefined,
  includeBase: boolean,
  offset: number,
  bytes: number,
): Promise<AllocationRun> {
  let length = bytes;
  let first = true;
  for (let layer: BlockNode | undefined = top; layer !== undefined; layer = nextInChain(layer)) {
    if (layer === base && !includeBase) break;
    if (layer.driver.kind !== 'filter') {
      if (offset >= layer.length) {
        if (!first) return { allocated: true, bytes: length };
        return { allocated: false, bytes: length };
      }
      const extents = await layer.blockStatus(offset, length, { nested: true });
      if (extents.length === 0) return { allocated: false, bytes: length };
      // The run of one answer: extents that differ only in data/zero count together.
      const allocated = extents[0]!.allocated;
      let run = 0;
      for (const extent of extents) {
        if (extent.allocated !== allocated) break;
        run += extent.length;
      }
      if (allocated) return { allocated: true, bytes: Math.min(length, run) };
      length = Math.min(length, run);
      first = false;
    }
    if (layer === base) break;
  }
  return { allocated: false, bytes: length };
}
