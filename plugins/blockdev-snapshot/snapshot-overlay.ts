/**
 * Where each action's overlay comes from. blockdev-snapshot-sync makes it
 * (QEMU 7.2: bdrv_img_create, then bdrv_open with BDRV_O_NO_BACKING): a
 * new image of `format` (qcow2 by default) as large as the node, whose
 * header names the node's filename and format as its backing file, unless
 * mode=existing; opened without its backing file, read-only if the node
 * is, and dropped again once nothing uses it (nobody but the users it took
 * over holds it: it closes when the last of them lets go, or at once if it
 * took over none). blockdev-snapshot takes a node added with blockdev-add.
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockdevOptionsValue } from '../../core/block/blockdev-ref.js';
import type { DriverRegistry } from '../../core/block/driver-registry.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import { nodeFilename } from '../../core/block/node-info.js';
import { BlockLayerError } from '../../core/errors.js';
import type { OverlaySource } from './external-snapshot.js';
import type { BlockdevSnapshotArgs, BlockdevSnapshotSyncArgs } from './options.js';
import { lookupNode, nameTaken } from './snapshot-checks.js';

export function newOverlay(
  args: BlockdevSnapshotSyncArgs,
  graph: BlockGraph,
  drivers: DriverRegistry,
  creator: ImageCreator,
): OverlaySource {
  const filename = args['snapshot-file'];
  const format = args.format ?? 'qcow2';
  const name = args['snapshot-node-name'];
  return {
    async open(old) {
      if (args['node-name'] !== undefined && name === undefined) throw new BlockLayerError('New overlay node-name missing');
      if (name !== undefined && nameTaken(graph, name)) throw new BlockLayerError('New overlay node-name already in use');
      const driver = drivers.get(format);
      if ((args.mode ?? 'absolute-paths') === 'absolute-paths') {
        if (driver === undefined) throw new BlockLayerError(`Unknown file format '${format}'`);
        if (driver.createOptions?.properties.backing_file === undefined) {
          throw new BlockLayerError(`Backing file not supported for file format '${format}'`);
        }
        const backing = { backing_file: await nodeFilename(old), backing_fmt: old.driver.name };
        await creator.create(format, { filename, size: old.length, ...backing });
      } else if (driver === undefined) {
        throw new BlockLayerError(`Unknown driver '${format}'`);
      }
      const options: Record<string, unknown> = { driver: format };
      if (name !== undefined) options['node-name'] = name;
      Object.assign(options, driver.kind === 'protocol' ? { filename } : { file: { driver: 'file', filename } });
      if (driver.options.properties.backing !== undefined) options.backing = null;
      options.discard = old.settings.discard;
      const overlay = await graph.open(options as unknown as BlockdevOptionsValue, { readOnly: old.readOnly });
      graph.closeWithLastUser(overlay);
      return overlay;
    },
    // Nothing happens if it is in use, or already gone with its last user.
    release: (overlay) => graph.closeIfUnused(overlay),
  };
}

export function existingOverlay(args: BlockdevSnapshotArgs, graph: BlockGraph): OverlaySource {
  return {
    // bdrv_open by reference: bdrv_lookup_bs(overlay, overlay).
    open: () => Promise.resolve().then(() => lookupNode(graph, args.overlay, args.overlay)),
    // blockdev-add's node stays with the monitor.
    release: () => undefined,
  };
}
