/**
 * The named dirty bitmaps of the layer, per node (QEMU keeps them in each
 * BlockDriverState's dirty_bitmaps list). A node with bitmaps has one tap
 * on its `afterWrite` hook that records writes, write-zeroes and discards
 * into every enabled bitmap (failed ones too, as QEMU marks them) and
 * follows truncation; a node without bitmaps has no tap, so its writes pay
 * nothing, and neither does a node whose only bitmap shows a job's own
 * copy bitmap (it never records). Bitmaps go away with their node.
 *
 * Persistent bitmaps live in the image where its driver can store them
 * (qcow2): they are loaded as the node opens (read-only ones on a
 * read-only node, inconsistent ones where the image was not closed
 * cleanly) and stored as a writable node closes, as QEMU loads them in
 * qcow2_open and stores them in qcow2_inactivate.
 *
 * Lookups and their messages are QEMU's (block_dirty_bitmap_lookup,
 * bdrv_create_dirty_bitmap); the QMP commands live in plugins/dirty-bitmap.
 */
import { inject, injectable } from 'inversify';
import type { BlockGraph } from '../block/block-graph.js';
import type { BlockNode } from '../block/block-node.js';
import type { StoredBitmap } from '../block/driver.js';
import type { WriteRequest, WriteResult } from '../block/request.js';
import { BlockLayerError } from '../errors.js';
import type { BlockLayerHooks } from '../hooks/block-layer-hooks.js';
import { untap } from '../hooks/untap.js';
import { TOKENS } from '../tokens.js';
import type { BlockDirtyInfoValue } from './bitmap-schema.js';
import { ClusterBitmap } from './cluster-bitmap.js';
import { DirtyBitmap } from './dirty-bitmap.js';

const TAP = 'BitmapStore';
/** BDRV_BITMAP_MAX_NAME_SIZE: longest bitmap name, in bytes. */
export const BITMAP_MAX_NAME_SIZE = 1023;
export const MIN_GRANULARITY = 512;
const KiB = 1024;

/** QEMU's bdrv_get_default_bitmap_granularity: the node's cluster size within [4 KiB, 64 KiB]; 64 KiB if it has none. */
export function defaultBitmapGranularity(node: BlockNode): number {
  const cluster = node.limits.clusterSize;
  return cluster > 0 ? Math.min(64 * KiB, Math.max(4 * KiB, cluster)) : 64 * KiB;
}

export interface CreateBitmapOptions {
  /** Default: defaultBitmapGranularity(node). A power of two, at least 512 (the commands check, with QEMU's message). */
  granularity?: number;
  /** Default true. */
  enabled?: boolean;
  persistent?: boolean;
}

@injectable()
export class BitmapStore {
  /** Bitmaps by node, newest first (the order QEMU lists them in). */
  private readonly byNode = new Map<BlockNode, DirtyBitmap[]>();
  /** Bitmaps that show a job's bits (showJobBitmap): listed, never recording, never resized here. */
  private readonly jobViews = new WeakSet<DirtyBitmap>();
  /** Persistent bitmaps loaded from a node's image, until the node is announced (a failed open drops them). */
  private readonly loaded = new WeakMap<BlockNode, StoredBitmap[]>();

  constructor(
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.BlockLayerHooks) hooks: BlockLayerHooks,
  ) {
    hooks.nodeOpened.tapPromise(TAP, (node) => this.load(node));
    hooks.nodeAdded.tap(TAP, (node) => this.adopt(node));
    hooks.nodeClosing.tapPromise(TAP, (node) => this.store(node));
    hooks.nodeRemoved.tap(TAP, (node) => this.forget(node));
  }

  private async load(node: BlockNode): Promise<void> {
    const stored = await node.driver.loadBitmaps?.(node.driverState);
    if (stored !== undefined && stored.length > 0) this.loaded.set(node, stored);
  }

  /**
   * The loaded bitmaps join the node's list in the image's order, so the
   * last one stored is listed first (as QEMU lists them). A node that can
   * store bitmaps follows reopens: going read-only its persistent bitmaps
   * are stored and become read-only; going read-write the image marks them
   * in use again and they may change (qcow2_reopen_bitmaps_ro/_rw).
   */
  private adopt(node: BlockNode): void {
    if (node.driver.storeBitmaps !== undefined) {
      node.hooks.reopening.tapPromise(TAP, async (_, readOnly) => {
        if (readOnly) await this.store(node);
      });
      node.hooks.reopened.tapPromise(TAP, async (_, readOnly) => {
        if (!readOnly) await node.driver.markBitmapsInUse?.(node.driverState);
        for (const bitmap of this.list(node)) if (bitmap.persistent) bitmap.setReadonly(readOnly);
      });
    }
    const stored = this.loaded.get(node);
    if (stored === undefined) return;
    this.loaded.delete(node);
    for (const bitmap of stored) {
      const bits = bitmap.bits === undefined ? undefined : ClusterBitmap.fromBytes(bitmap.granularity, node.length, bitmap.bits);
      this.add(
        new DirtyBitmap(node, bitmap.name, bitmap.granularity, {
          size: node.length,
          // An inconsistent bitmap is disabled too (bdrv_dirty_bitmap_set_inconsistent).
          enabled: bitmap.enabled && !bitmap.inconsistent,
          persistent: true,
          inconsistent: bitmap.inconsistent,
          readonly: node.readOnly,
          ...(bits === undefined ? {} : { bits }),
        }),
      );
    }
  }

  /**
   * Stores the persistent bitmaps of a writable node that is closing (or of
   * one whose open failed, so that its image does not keep them in use).
   * Those of a read-only node are lost, as in QEMU.
   */
  private async store(node: BlockNode): Promise<void> {
    if (node.driver.storeBitmaps === undefined || node.readOnly) return;
    const announced = this.byNode.get(node)?.filter((b) => b.persistent);
    const bitmaps: StoredBitmap[] =
      announced?.map((b) => ({
        name: b.name!,
        granularity: b.granularity,
        enabled: b.enabled || (b.successor?.enabled ?? false),
        inconsistent: b.inconsistent,
        bits: b.inconsistent ? undefined : b.toBytes(),
      })) ?? this.loaded.get(node) ?? [];
    await node.driver.storeBitmaps(node.driverState, bitmaps);
  }

  /**
   * Takes a persistent bitmap out of its image now, before it is released
   * (QEMU removes it from the image as the command runs): until the node
   * stores its bitmaps again, the image no longer holds it. Nothing for
   * other bitmaps, or on a read-only node (its image is not written).
   */
  async removeStored(bitmap: DirtyBitmap): Promise<void> {
    const { node } = bitmap;
    if (!bitmap.persistent || bitmap.name === undefined || node.readOnly) return;
    await node.driver.removeBitmap?.(node.driverState, bitmap.name);
  }

  /**
   * A new named bitmap on `node`, clean, covering the node's length
   * (bdrv_create_dirty_bitmap): "Bitmap already exists: NAME", "Bitmap
   * name too long: NAME".
   */
  create(node: BlockNode, name: string, options: CreateBitmapOptions = {}): DirtyBitmap {
    if (this.find(node, name) !== undefined) throw new BlockLayerError(`Bitmap already exists: ${name}`);
    if (Buffer.byteLength(name, 'utf8') > BITMAP_MAX_NAME_SIZE) throw new BlockLayerError(`Bitmap name too long: ${name}`);
    return this.add(
      new DirtyBitmap(node, name, options.granularity ?? defaultBitmapGranularity(node), {
        size: node.length,
        enabled: options.enabled ?? true,
        persistent: options.persistent ?? false,
      }),
    );
  }

  /**
   * Lists a job's own bitmap on its node as an anonymous, non-recording
   * bitmap over `bits`, which the job keeps changing (QEMU shows a backup's
   * copy bitmap this way); the job releases it when it ends.
   */
  showJobBitmap(node: BlockNode, bits: ClusterBitmap): DirtyBitmap {
    const view = new DirtyBitmap(node, undefined, bits.clusterSize, { size: bits.length, enabled: false, bits });
    this.jobViews.add(view);
    return this.add(view);
  }

  /**
   * Freezes `bitmap` for a job (bdrv_dirty_bitmap_create_successor): it is
   * busy and stops changing, and a new anonymous bitmap on its node records
   * the writes from now on. The caller has checked that it is usable.
   */
  freeze(bitmap: DirtyBitmap): void {
    const successor = this.add(new DirtyBitmap(bitmap.node, undefined, bitmap.granularity, { size: bitmap.size }));
    bitmap.freeze(successor);
  }

  /**
   * Ends a freeze: `bitmap` becomes what its successor recorded
   * (bdrv_dirty_bitmap_abdicate, `keep` false) or gets it added to what it
   * had (bdrv_reclaim_dirty_bitmap, `keep` true); the successor goes.
   */
  thaw(bitmap: DirtyBitmap, keep: boolean): void {
    this.release(bitmap.thaw(keep));
  }

  private add(bitmap: DirtyBitmap): DirtyBitmap {
    const list = this.byNode.get(bitmap.node);
    if (list === undefined) this.byNode.set(bitmap.node, [bitmap]);
    else list.unshift(bitmap);
    this.updateTap(bitmap.node);
    return bitmap;
  }

  /** Deletes `bitmap` (bdrv_release_dirty_bitmap); the node's tap goes with its last bitmap that records. */
  release(bitmap: DirtyBitmap): void {
    const list = this.byNode.get(bitmap.node);
    const index = list?.indexOf(bitmap) ?? -1;
    if (list === undefined || index < 0) return;
    list.splice(index, 1);
    if (list.length === 0) this.byNode.delete(bitmap.node);
    this.updateTap(bitmap.node);
  }

  /** The node's tap is there exactly while it has a bitmap other than a job's view. */
  private updateTap(node: BlockNode): void {
    const wanted = (this.byNode.get(node) ?? []).some((b) => !this.jobViews.has(b));
    const tapped = node.hooks.afterWrite.taps.some((tap) => tap.name === TAP);
    if (wanted && !tapped) node.hooks.afterWrite.tap(TAP, (request, result) => this.record(request, result));
    else if (!wanted && tapped) untap(node.hooks.afterWrite, TAP);
  }

  /** The bitmaps of `node`, newest first. */
  list(node: BlockNode): readonly DirtyBitmap[] {
    return this.byNode.get(node) ?? [];
  }

  /** The bitmap `name` of `node` (bdrv_find_dirty_bitmap). */
  find(node: BlockNode, name: string): DirtyBitmap | undefined {
    return this.byNode.get(node)?.find((b) => b.name === name);
  }

  /**
   * The node a `node` argument names, by device or node name:
   * "Node 'x' not found" (block_dirty_bitmap_lookup's message).
   */
  node(nodeName: string): BlockNode {
    const node = this.graph.backend(nodeName)?.node ?? this.graph.node(nodeName);
    if (node === undefined) throw new BlockLayerError(`Node '${nodeName}' not found`);
    return node;
  }

  /** block_dirty_bitmap_lookup: "Node 'x' not found", "Dirty bitmap 'x' not found". */
  lookup(nodeName: string, name: string): DirtyBitmap {
    const bitmap = this.find(this.node(nodeName), name);
    if (bitmap === undefined) throw new BlockLayerError(`Dirty bitmap '${name}' not found`);
    return bitmap;
  }

  /**
   * The bitmap `name` on `node` or below it, following filtered children
   * and backing files (not a format's file), as an NBD export looks up the
   * bitmaps it is given by name (bdrv_filter_or_cow_bs).
   */
  findBelow(node: BlockNode, name: string): DirtyBitmap | undefined {
    for (let current: BlockNode | undefined = node; current !== undefined; current = filterOrCowChild(current)) {
      const bitmap = this.find(current, name);
      if (bitmap !== undefined) return bitmap;
    }
    return undefined;
  }

  /** `dirty-bitmaps` of query-named-block-nodes: undefined for a node without any (QEMU leaves the member out). */
  info(node: BlockNode): BlockDirtyInfoValue[] | undefined {
    const list = this.byNode.get(node);
    return list === undefined ? undefined : list.map((b) => b.info());
  }

  private record(request: WriteRequest, result: WriteResult): void {
    const bitmaps = this.byNode.get(request.node) ?? [];
    if (request.kind === 'truncate') {
      if (result.error === undefined) for (const bitmap of bitmaps) if (!this.jobViews.has(bitmap)) bitmap.resize(request.offset);
      return;
    }
    for (const bitmap of bitmaps) bitmap.recordWrite(request.offset, request.bytes);
  }

  private forget(node: BlockNode): void {
    if (!this.byNode.delete(node)) return;
    untap(node.hooks.afterWrite, TAP);
  }
}

/** bdrv_filter_or_cow_bs: a filter's filtered child, else the backing file. */
function filterOrCowChild(node: BlockNode): BlockNode | undefined {
  if (node.driver.kind === 'filter') {
    const spec = node.driver.children?.find((c) => c.filtered);
    return spec === undefined ? undefined : node.children.get(spec.name)?.node;
  }
  return node.children.get('backing')?.node;
}
