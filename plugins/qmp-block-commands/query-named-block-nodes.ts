/** query-named-block-nodes: every node, newest first (as QEMU lists them). */
import { inject, injectable } from 'inversify';
import type { BitmapStore } from '../../core/bitmap/bitmap-store.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import { type BlockDeviceInfo, blockDeviceInfo } from '../../core/block/node-info.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';
import { TOKENS } from '../../core/tokens.js';

const args = Qapi.struct('q_obj_query-named-block-nodes-arg', {
  flat: Qapi.optional(Qapi.bool({ description: 'omit the backing chain under each image', default: false })),
});

/** BlockDeviceInfo's schema, as far as introspection describes it (query-block's `inserted` too). */
export const BLOCK_DEVICE_INFO = Qapi.struct('BlockDeviceInfo', { 'node-name': Qapi.str(), drv: Qapi.str() }, { additionalProperties: true });

const returns = Qapi.list(BLOCK_DEVICE_INFO);

@injectable()
export class QueryNamedBlockNodesCommand implements QmpCommand<Static<typeof args>> {
  readonly name = 'query-named-block-nodes';
  readonly summary = 'Describe every node of the graph';
  readonly args = args;
  readonly returns = returns;

  constructor(
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.BitmapStore) private readonly bitmaps: BitmapStore,
  ) {}

  async execute(input: Static<typeof args>): Promise<BlockDeviceInfo[]> {
    const nodes = this.graph.list().reverse();
    return Promise.all(nodes.map((node) => blockDeviceInfo(node, input.flat ?? false, this.bitmaps.info(node))));
  }
}
