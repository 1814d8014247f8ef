/**
 * nbd-server-add (deprecated in QEMU, kept as it keeps it): block-export-add
 * with the export named and identified by `name` (default: `device`), the
 * node found by device or node name.
 */
import { inject, injectable } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { TOKENS } from '../../core/tokens.js';
import { NbdServer } from './nbd-server.js';
import { NbdServerAdd, type NbdServerAddArgs } from './options.js';

@injectable()
export class NbdServerAddCommand implements QmpCommand<NbdServerAddArgs> {
  readonly name = 'nbd-server-add';
  readonly summary = 'Export a node over NBD (deprecated: use block-export-add)';
  readonly args = NbdServerAdd;

  constructor(
    @inject(NbdServer) private readonly server: NbdServer,
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
  ) {}

  execute(args: NbdServerAddArgs): void {
    const node = this.graph.lookup(args.device);
    const name = args.name ?? args.device;
    this.server.addExport({
      type: 'nbd',
      id: name,
      'node-name': node.nodeName,
      name,
      ...(args.description === undefined ? {} : { description: args.description }),
      writable: args.writable ?? false,
      ...(args.bitmap === undefined ? {} : { bitmaps: [args.bitmap] }),
    });
  }
}
