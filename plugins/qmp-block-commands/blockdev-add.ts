/** blockdev-add: opens a node tree from QEMU's BlockdevOptions (the arguments are the options). */
import { inject, injectable } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import { BLOCKDEV_OPTIONS } from '../../core/block/blockdev-ref.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { Qapi } from '../../core/schema/qapi.js';
import { TOKENS } from '../../core/tokens.js';

@injectable()
export class BlockdevAddCommand implements QmpCommand {
  readonly name = 'blockdev-add';
  readonly summary = 'Open a new node (and its child nodes)';
  readonly args = Qapi.ref(BLOCKDEV_OPTIONS);

  constructor(@inject(TOKENS.BlockGraph) private readonly graph: BlockGraph) {}

  async execute(options: Record<string, unknown>): Promise<void> {
    await this.graph.add(options);
  }
}
