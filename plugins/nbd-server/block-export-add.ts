/** block-export-add: export a node over the NBD server (type nbd, the only export type here). */
import { inject, injectable } from 'inversify';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { NbdServer } from './nbd-server.js';
import { type BlockExportArgs, BlockExportOptions } from './options.js';

@injectable()
export class BlockExportAddCommand implements QmpCommand<BlockExportArgs> {
  readonly name = 'block-export-add';
  readonly summary = 'Export a node over NBD';
  readonly args = BlockExportOptions;

  constructor(@inject(NbdServer) private readonly server: NbdServer) {}

  execute(args: BlockExportArgs): void {
    this.server.addExport(args);
  }
}
