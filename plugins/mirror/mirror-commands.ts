/**
 * blockdev-mirror and drive-mirror. Neither is a transaction action in QEMU
 * 7.2, so they run on their own: look the source up (a root node), find or
 * make the target, and hand both to the starter.
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { DriverRegistry } from '../../core/block/driver-registry.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { openDriveMirrorTarget } from './drive-mirror-target.js';
import { rootNode } from './mirror-checks.js';
import type { MirrorStarter } from './mirror-starter.js';
import { BlockdevMirror, type BlockdevMirrorArgs, DriveMirror, type DriveMirrorArgs } from './options.js';

export function mirrorCommands(graph: BlockGraph, drivers: DriverRegistry, creator: ImageCreator, starter: MirrorStarter): QmpCommand[] {
  return [
    {
      name: 'blockdev-mirror',
      summary: 'Start mirroring a node to another node, switching to it on completion',
      args: BlockdevMirror,
      async execute(args: BlockdevMirrorArgs) {
        const source = rootNode(graph, args.device);
        const target = graph.lookup(args.target);
        const { target: _target, ...common } = args;
        await starter.start({ args: common, source, target, zeroTarget: args.sync === 'full' });
      },
    },
    {
      name: 'drive-mirror',
      summary: 'Start mirroring a node to an image file, switching to it on completion',
      args: DriveMirror,
      async execute(args: DriveMirrorArgs) {
        const source = rootNode(graph, args.device);
        const target = await openDriveMirrorTarget(args, source, graph, drivers, creator);
        const { target: _target, format: _format, 'node-name': _nodeName, mode: _mode, ...common } = args;
        await starter.start({
          args: { ...common, sync: target.sync },
          source,
          target: target.node,
          zeroTarget: target.zeroTarget,
          linkTargetBacking: target.linkBacking,
          // The target is the command's (QEMU's drive-mirror holds no reference of its own): unused, it closes, named or not.
          releaseTarget: async () => {
            if (target.node.implicit) await graph.closeIfUnused(target.node);
            else if (target.node.parents.size === 0 && graph.node(target.node.nodeName) === target.node) await graph.del(target.node.nodeName);
          },
        });
      },
    },
  ];
}
