/**
 * drive-mirror's target (QEMU's qmp_drive_mirror up to blockdev_mirror_common):
 * a file it creates (mode absolute-paths, the default) or opens (mode
 * existing), in `format` (default: the source's; blocklayer does not
 * probe), sized like the source. A new image names the source's backing
 * file for sync=top and the source for sync=none; sync=full, or top
 * without a backing file, makes an image without one. Either way the
 * target opens without its backing file (QEMU's BDRV_O_NO_BACKING: the
 * job copies whole target clusters instead, mirror-cow.ts), and gets it
 * when the job ends without failing (also a soft cancel): a new image the
 * node it names (QEMU's MIRROR_SOURCE_BACKING_CHAIN), an existing one
 * the file its header names, opened then (MIRROR_OPEN_BACKING_CHAIN).
 * The node gets `node-name`, or none of its own and closes with the job.
 */
import { cowChild, skipFilters } from '../../core/block/backing-chain.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { DriverRegistry } from '../../core/block/driver-registry.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import { nodeFilename } from '../../core/block/node-info.js';
import { BlockLayerError } from '../../core/errors.js';
import { backingOf } from './mirror-checks.js';
import type { DriveMirrorArgs } from './options.js';

export interface DriveMirrorTarget {
  node: BlockNode;
  /** sync=top without a backing file is full. */
  sync: DriveMirrorArgs['sync'];
  /** QEMU's zero_target: sync=full into an existing image. */
  zeroTarget: boolean;
  /** Gives the target its backing node (once the job ended without failing). */
  linkBacking: () => Promise<void>;
}

export async function openDriveMirrorTarget(
  args: DriveMirrorArgs,
  source: BlockNode,
  graph: BlockGraph,
  drivers: DriverRegistry,
  creator: ImageCreator,
): Promise<DriveMirrorTarget> {
  // QEMU checks early that the source is free, to avoid creating the target for nothing.
  graph.checkNotBusy(source);
  const mode = args.mode ?? 'absolute-paths';
  const format = args.format ?? source.driver.name;
  const sourceBacking = backingOf(source);
  const sync = args.sync === 'top' && sourceBacking === undefined ? 'full' : args.sync;
  const backing = sync === 'none' ? source : sync === 'full' ? undefined : sourceBacking;
  if (args.replaces !== undefined && args['node-name'] === undefined) {
    throw new BlockLayerError('a node-name must be provided when replacing a named node of the graph');
  }
  const driver = drivers.get(format);
  const options: Record<string, unknown> = { driver: format };
  if (mode === 'absolute-paths') {
    if (driver === undefined) throw new BlockLayerError(`Unknown file format '${format}'`);
    const create: Record<string, unknown> = { filename: args.target, size: source.length };
    if (backing !== undefined) {
      if (driver.createOptions?.properties.backing_file === undefined) {
        throw new BlockLayerError(`Backing file not supported for file format '${format}'`);
      }
      create.backing_file = await nodeFilename(backing);
      create.backing_fmt = backing.driver.name;
    }
    await creator.create(format, create);
  } else if (driver === undefined) {
    throw new BlockLayerError(`Unknown driver '${format}'`);
  }
  if (args['node-name'] !== undefined) options['node-name'] = args['node-name'];
  Object.assign(options, driver.kind === 'protocol' ? { filename: args.target } : { file: { driver: 'file', filename: args.target } });
  options.discard = source.settings.discard;
  if (driver.options.properties.backing !== undefined) options.backing = null;
  const node = await graph.open(options as unknown as Parameters<BlockGraph['open']>[0]);
  const linkBacking = async (): Promise<void> => {
    const image = skipFilters(node);
    if (mode === 'existing') await graph.openBackingFile(image);
    else if (cowChild(image) !== backing) await graph.linkBacking(image, backing);
  };
  return { node, sync, zeroTarget: sync === 'full' && mode === 'existing', linkBacking };
}
