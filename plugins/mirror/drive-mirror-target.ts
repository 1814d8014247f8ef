/**
 * drive-mirror's target (QEMU's qmp_drive_mirror up to blockdev_mirror_common):
 * a file it creates (mode absolute-paths, the default) or opens (mode
 * existing), in `format` (default: the source's; blocklayer does not
 * probe), sized like the source. A new image is backed by the source's
 * backing node for sync=top and by the source itself for sync=none, and
 * the target node uses that node as its backing from the start (QEMU
 * attaches it at completion; reads of the target are the same either
 * way); sync=full, or top without a backing file, makes an image without
 * one. An existing image opens its own backing file. The node gets
 * `node-name`, or none of its own and closes with the job.
 */
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
    if (driver.options.properties.backing !== undefined) options.backing = backing?.nodeName ?? null;
  } else if (driver === undefined) {
    throw new BlockLayerError(`Unknown driver '${format}'`);
  }
  if (args['node-name'] !== undefined) options['node-name'] = args['node-name'];
  Object.assign(options, driver.kind === 'protocol' ? { filename: args.target } : { file: { driver: 'file', filename: args.target } });
  options.discard = source.settings.discard;
  const node = await graph.open(options as unknown as Parameters<BlockGraph['open']>[0]);
  return { node, sync, zeroTarget: sync === 'full' && mode === 'existing' };
}
