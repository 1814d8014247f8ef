/**
 * drive-backup's target: a file it creates (mode absolute-paths, the
 * default) or opens (mode existing), in the source's format unless `format`
 * says otherwise, sized like the source; sync=top backs the new image with
 * the source's backing image (and becomes full when there is none),
 * sync=none with the source itself. The node is opened with discard=unmap
 * and detect-zeroes=unmap, as QEMU does, and has no name of its own.
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { DriverRegistry } from '../../core/block/driver-registry.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import { nodeFilename } from '../../core/block/node-info.js';
import { BlockLayerError } from '../../core/errors.js';
import type { DriveBackupArgs } from './options.js';

export interface DriveBackupTarget {
  node: BlockNode;
  /** sync=top without a backing file is a full backup. */
  sync: DriveBackupArgs['sync'];
}

export async function openDriveBackupTarget(
  args: DriveBackupArgs,
  source: BlockNode,
  graph: BlockGraph,
  drivers: DriverRegistry,
  creator: ImageCreator,
): Promise<DriveBackupTarget> {
  const format = args.format ?? source.driver.name;
  const driver = drivers.get(format);
  if (driver === undefined) throw new BlockLayerError(`Unknown file format '${format}'`);
  const sourceBacking = source.children.get('backing')?.node;
  const sync = args.sync === 'top' && sourceBacking === undefined ? 'full' : args.sync;
  const backing = sync === 'top' ? sourceBacking : sync === 'none' ? source : undefined;
  if ((args.mode ?? 'absolute-paths') === 'absolute-paths') {
    const options: Record<string, unknown> = { filename: args.target, size: source.length };
    if (backing !== undefined) {
      if (driver.createOptions?.properties.backing_file === undefined) {
        throw new BlockLayerError(`Backing file not supported for file format '${format}'`);
      }
      options.backing_file = await nodeFilename(backing);
      options.backing_fmt = backing.driver.name;
    }
    await creator.create(format, options);
  }
  const location = driver.kind === 'protocol' ? { filename: args.target } : { file: { driver: 'file', filename: args.target } };
  const node = await graph.open({ driver: format, ...location, discard: 'unmap', 'detect-zeroes': 'unmap' });
  return { node, sync };
}
