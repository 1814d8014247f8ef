/** blockdev-del: closes a node added by blockdev-add, if nothing uses it. */
import { inject, injectable } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';
import { TOKENS } from '../../core/tokens.js';

const args = Qapi.struct('q_obj_blockdev-del-arg', { 'node-name': Qapi.str() });

@injectable()
export class BlockdevDelCommand implements QmpCommand<Static<typeof args>> {
  readonly name = 'blockdev-del';
  readonly summary = 'Close a node that nothing uses';
  readonly args = args;

  constructor(@inject(TOKENS.BlockGraph) private readonly graph: BlockGraph) {}

  async execute(input: Static<typeof args>): Promise<void> {
    await this.graph.del(input['node-name']);
  }
}
