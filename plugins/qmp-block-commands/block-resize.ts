/**
 * block_resize: changes the size of a node, named by its device or its node
 * name, with QEMU's checks in QEMU's order (qmp_block_resize): the node is
 * found, the size is not negative, no job and no backing link blocks the
 * resize, no user refuses to share it, the node is writable; then the node
 * is truncated with its users drained.
 */
import { inject, injectable } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { BlockLayerError } from '../../core/errors.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';
import { TOKENS } from '../../core/tokens.js';
import { checkResizeShared } from './resize-permission.js';

const args = Qapi.struct('q_obj_block_resize-arg', {
  device: Qapi.optional(Qapi.str({ description: 'the device whose node to resize' })),
  'node-name': Qapi.optional(Qapi.str({ description: 'the node to resize' })),
  size: Qapi.int({ description: 'the new size in bytes' }),
});

type Args = Static<typeof args>;

@injectable()
export class BlockResizeCommand implements QmpCommand<Args> {
  readonly name = 'block_resize';
  readonly summary = 'Resize a node';
  readonly args = args;

  constructor(@inject(TOKENS.BlockGraph) private readonly graph: BlockGraph) {}

  async execute(input: Args): Promise<void> {
    const node = this.find(input.device, input['node-name']);
    if (input.size < 0) throw new BlockLayerError("Parameter 'size' expects a >0 size");
    // QEMU prints the absent device argument with printf's "(null)".
    if (this.graph.busyReason(node) !== undefined) throw new BlockLayerError(`Device '${input.device ?? '(null)'}' is in use`);
    checkResizeShared(node);
    if (node.readOnly) throw new BlockLayerError('Image is read-only');
    // As QEMU, with the node's users drained; the resize itself is the command's own request.
    await node.drained(() => node.truncate(input.size, { nested: true }));
  }

  /** bdrv_lookup_bs: the device's node (as attached, filters included), else the node of that name. */
  private find(device: string | undefined, nodeName: string | undefined): BlockNode {
    const node = (device === undefined ? undefined : this.graph.backend(device)?.node)
      ?? (nodeName === undefined ? undefined : this.graph.node(nodeName));
    if (node === undefined) throw new BlockLayerError(`Cannot find device='${device ?? ''}' nor node-name='${nodeName ?? ''}'`);
    return node;
  }
}
