/**
 * query-block: one BlockInfo per device (named backend). blocklayer's
 * devices are QEMU's BlockBackends without a guest device model, so, as
 * QEMU reports such a backend, there is no `qdev`, no tray and no
 * `io-status` (a device model enables it), the medium is removable and not
 * locked. `inserted` is the BlockDeviceInfo of query-named-block-nodes for
 * the node the user knows: filters a job put in without a name are skipped,
 * at the top and down the chain (bdrv_query_info).
 */
import { inject, injectable } from 'inversify';
import type { BitmapStore } from '../../core/bitmap/bitmap-store.js';
import { nextInChain, skipImplicitFilters } from '../../core/block/backing-chain.js';
import type { BlockBackend } from '../../core/block/block-backend.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { type BlockDeviceInfo, blockDeviceInfo } from '../../core/block/node-info.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { Qapi } from '../../core/schema/qapi.js';
import { TOKENS } from '../../core/tokens.js';
import { BLOCK_DEVICE_INFO } from './query-named-block-nodes.js';

export interface BlockInfo {
  device: string;
  type: 'unknown';
  removable: boolean;
  locked: boolean;
  inserted?: BlockDeviceInfo;
}

/** The members blocklayer reports (QEMU's qdev, tray_open and io-status need a guest device). */
const returns = Qapi.list(
  Qapi.struct('BlockInfo', {
    device: Qapi.str(),
    type: Qapi.str(),
    removable: Qapi.bool(),
    locked: Qapi.bool(),
    inserted: Qapi.optional(BLOCK_DEVICE_INFO),
  }),
);

/** The next image of a device's chain as query-block shows it: filters followed, implicit ones skipped. */
function deviceChainStep(node: BlockNode): BlockNode | undefined {
  const below = nextInChain(node);
  return below === undefined ? undefined : skipImplicitFilters(below);
}

@injectable()
export class QueryBlockCommand implements QmpCommand {
  readonly name = 'query-block';
  readonly summary = 'Describe every device and the image inserted in it';
  readonly returns = returns;

  constructor(
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.BitmapStore) private readonly bitmaps: BitmapStore,
  ) {}

  async execute(): Promise<BlockInfo[]> {
    return Promise.all(this.graph.listBackends().map((backend) => this.describe(backend)));
  }

  private async describe(backend: BlockBackend): Promise<BlockInfo> {
    const node = skipImplicitFilters(backend.node);
    return {
      device: backend.name,
      type: 'unknown',
      removable: true,
      locked: false,
      inserted: await blockDeviceInfo(node, false, this.bitmaps.info(node), deviceChainStep),
    };
  }
}
