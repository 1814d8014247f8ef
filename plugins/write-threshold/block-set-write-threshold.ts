/**
 * block-set-write-threshold (QEMU's block/write-threshold.c): a node's
 * write threshold, an offset that the first write, write-zeroes or discard
 * ending past it reports as BLOCK_WRITE_THRESHOLD (how far past, and the
 * threshold), and so clears: a management tool sets it near the end of what
 * the storage under a thin-provisioned image holds, and grows it when told.
 * 0 clears it. The node is found by node name only, as in QEMU.
 */
import { inject, injectable } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { WriteRequest } from '../../core/block/request.js';
import { BlockLayerError } from '../../core/errors.js';
import type { EventPublisher } from '../../core/hooks/event-publisher.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';
import { TOKENS } from '../../core/tokens.js';

const args = Qapi.struct('q_obj_block-set-write-threshold-arg', {
  'node-name': Qapi.str({ description: 'the node to watch' }),
  'write-threshold': Qapi.uint64({ description: 'the offset in bytes past which a write is reported; 0 clears the threshold' }),
});

type Args = Static<typeof args>;

const TAP = 'WriteThreshold';

@injectable()
export class BlockSetWriteThresholdCommand implements QmpCommand<Args> {
  readonly name = 'block-set-write-threshold';
  readonly summary = 'Report (BLOCK_WRITE_THRESHOLD) the first write past an offset of a node';
  readonly args = args;
  /** Nodes whose writes this plugin watches (tapped once, when a threshold is first set). */
  private readonly watched = new WeakSet<BlockNode>();

  constructor(
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.EventPublisher) private readonly events: EventPublisher,
  ) {}

  execute(input: Args): Promise<void> {
    const node = this.graph.node(input['node-name']);
    if (node === undefined) return Promise.reject(new BlockLayerError(`Device '${input['node-name']}' not found`));
    node.writeThreshold = input['write-threshold'];
    if (!this.watched.has(node)) {
      this.watched.add(node);
      node.hooks.beforeWrite.tap(TAP, (request) => this.check(request));
    }
    return Promise.resolve();
  }

  /** bdrv_write_threshold_check_write: writes and discards, not truncation. */
  private check(request: WriteRequest): undefined {
    const { node } = request;
    const threshold = node.writeThreshold;
    const end = request.offset + request.bytes;
    if (request.kind === 'truncate' || threshold === 0 || threshold >= end) return undefined;
    node.writeThreshold = 0;
    this.events.publish('BLOCK_WRITE_THRESHOLD', { 'node-name': node.nodeName, 'amount-exceeded': end - threshold, 'write-threshold': threshold });
    return undefined;
  }
}
