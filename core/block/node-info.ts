/**
 * QEMU's BlockDeviceInfo for query-named-block-nodes: what a node is, where
 * its data lives (the filename, or a json: description when no single file
 * names it), its size, and its backing chain.
 */
import type { BlockDirtyInfoValue } from '../bitmap/bitmap-schema.js';
import { formatQemuJson } from '../util/qemu-json.js';
import type { BlockNode } from './block-node.js';
import type { SnapshotInfo } from './driver.js';

export interface ImageInfo {
  filename: string;
  format: string;
  'dirty-flag'?: boolean;
  'actual-size'?: number;
  'virtual-size': number;
  'cluster-size'?: number;
  'backing-filename'?: string;
  snapshots?: SnapshotInfo[];
  'backing-image'?: ImageInfo;
  'format-specific'?: { type: string; data: Record<string, unknown> };
}

export interface BlockDeviceInfo {
  file: string;
  'node-name': string;
  ro: boolean;
  drv: string;
  backing_file?: string;
  backing_file_depth: number;
  encrypted: boolean;
  detect_zeroes: string;
  bps: number;
  bps_rd: number;
  bps_wr: number;
  iops: number;
  iops_rd: number;
  iops_wr: number;
  image: ImageInfo;
  cache: { writeback: boolean; direct: boolean; 'no-flush': boolean };
  write_threshold: number;
  /** The node's dirty bitmaps, newest first; absent when it has none. */
  'dirty-bitmaps'?: BlockDirtyInfoValue[];
}

/**
 * The next image down a node's chain, whose ImageInfo nests as
 * `backing-image`: query-named-block-nodes follows backing links;
 * query-block passes its own step, which skips implicit filters.
 */
export type ChainStep = (node: BlockNode) => BlockNode | undefined;

const backingStep: ChainStep = (node) => node.children.get('backing')?.node;

/** The options that describe a node in a json: filename: its driver, given options and children. */
function describeOptions(node: BlockNode): Record<string, unknown> {
  const childMembers = new Set((node.driver.children ?? []).map((c) => c.name));
  // A child given as null (`"backing": null`) is part of the description; QEMU lists it first.
  const description: Record<string, unknown> = Object.fromEntries(Object.entries(node.givenOptions).filter(([key, value]) => childMembers.has(key) && value === null));
  description.driver = node.driver.name;
  for (const [key, value] of Object.entries(node.givenOptions)) {
    if (!childMembers.has(key)) description[key] = value;
  }
  for (const [role, edge] of node.children) {
    const child = describeOptions(edge.node);
    // A list member's children (quorum's children.0 …) go back into its list, as QEMU gathers them.
    const list = (node.driver.children ?? []).find((c) => c.list === true && role.startsWith(`${c.name}.`));
    if (list === undefined) description[role] = child;
    else ((description[list.name] ??= []) as unknown[]).push(child);
  }
  return description;
}

/** QEMU's bdrv_refresh_filename, simplified: a driver's own name, a pass-through's child's, else json:. */
export async function nodeFilename(node: BlockNode): Promise<string> {
  const own = await node.driver.describe?.(node.driverState);
  if (own?.filename !== undefined) return own.filename;
  const file = node.children.get('file');
  const childMembers = new Set((node.driver.children ?? []).map((c) => c.name));
  const hasOwnOptions = Object.entries(node.givenOptions).some(([k, v]) => !childMembers.has(k) || v === null);
  if (file !== undefined && node.children.size === 1 && !hasOwnOptions) return nodeFilename(file.node);
  return `json:${formatQemuJson(describeOptions(node))}`;
}

async function actualSize(node: BlockNode): Promise<number | undefined> {
  const own = await node.driver.describe?.(node.driverState);
  if (own?.actualSize !== undefined) return own.actualSize;
  const file = node.children.get('file');
  return file === undefined ? undefined : actualSize(file.node);
}

export async function imageInfo(node: BlockNode, withBacking: boolean, next: ChainStep = backingStep): Promise<ImageInfo> {
  const description = await node.driver.describe?.(node.driverState);
  const info: ImageInfo = { filename: await nodeFilename(node), format: node.driver.name, 'virtual-size': node.length };
  if (description?.dirtyFlag !== undefined) info['dirty-flag'] = description.dirtyFlag;
  const used = await actualSize(node);
  if (used !== undefined) info['actual-size'] = used;
  if (node.limits.clusterSize > 0) info['cluster-size'] = node.limits.clusterSize;
  const backing = node.children.get('backing');
  if (backing !== undefined) {
    info['backing-filename'] = await nodeFilename(backing.node);
  } else if (description?.backingFilename !== undefined) {
    // Opened without the backing file its image names (QEMU shows the header's name).
    info['backing-filename'] = description.backingFilename;
  }
  if (description?.snapshots !== undefined) info.snapshots = description.snapshots;
  const below = withBacking ? next(node) : undefined;
  if (below !== undefined) info['backing-image'] = await imageInfo(below, true, next);
  if (description?.formatSpecific !== undefined) info['format-specific'] = description.formatSpecific;
  return info;
}

function backingDepth(node: BlockNode, next: ChainStep): number {
  let depth = 0;
  for (let below = next(node); below !== undefined; below = next(below)) depth++;
  return depth;
}

/** `dirtyBitmaps`: the node's bitmaps as the BitmapStore describes them, if it has any. */
export async function blockDeviceInfo(
  node: BlockNode,
  flat: boolean,
  dirtyBitmaps?: BlockDirtyInfoValue[],
  next: ChainStep = backingStep,
): Promise<BlockDeviceInfo> {
  const backing = node.children.get('backing');
  const info: BlockDeviceInfo = {
    file: await nodeFilename(node),
    'node-name': node.nodeName,
    ro: node.readOnly,
    drv: node.driver.name,
    backing_file_depth: backingDepth(node, next),
    encrypted: false,
    detect_zeroes: node.settings.detectZeroes,
    bps: 0,
    bps_rd: 0,
    bps_wr: 0,
    iops: 0,
    iops_rd: 0,
    iops_wr: 0,
    image: await imageInfo(node, !flat, next),
    cache: { writeback: true, direct: false, 'no-flush': node.settings.noFlush },
    write_threshold: node.writeThreshold,
  };
  if (backing !== undefined) info.backing_file = await nodeFilename(backing.node);
  if (dirtyBitmaps !== undefined) info['dirty-bitmaps'] = dirtyBitmaps;
  return info;
}
