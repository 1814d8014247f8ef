/** block-stream: not a transaction action in QEMU 7.2, so it runs on its own. */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { BlockStream, type BlockStreamArgs } from './options.js';
import { resolveStream } from './stream-checks.js';
import type { StreamStarter } from './stream-starter.js';

export function streamCommands(graph: BlockGraph, starter: StreamStarter): QmpCommand[] {
  return [
    {
      name: 'block-stream',
      summary: "Copy the data of a node's backing chain (down to a base) into the node and drop those backing files",
      args: BlockStream,
      async execute(args: BlockStreamArgs) {
        await starter.start(args, await resolveStream(graph, args));
      },
    },
  ];
}
