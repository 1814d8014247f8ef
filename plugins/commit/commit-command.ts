/** block-commit: not a transaction action in QEMU 7.2, so it runs on its own. */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { resolveCommit } from './commit-checks.js';
import type { CommitStarter } from './commit-starter.js';
import { BlockCommit, type BlockCommitArgs } from './options.js';

export function commitCommands(graph: BlockGraph, starter: CommitStarter): QmpCommand[] {
  return [
    {
      name: 'block-commit',
      summary: 'Write the data of images of a backing chain down into a base image and drop them from the chain',
      args: BlockCommit,
      async execute(args: BlockCommitArgs) {
        await starter.start(args, await resolveCommit(graph, args));
      },
    },
  ];
}
