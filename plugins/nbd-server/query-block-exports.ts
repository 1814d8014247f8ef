/** query-block-exports: every export, newest first, with the node its I/O reaches now. */
import { inject, injectable } from 'inversify';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { Qapi } from '../../core/schema/qapi.js';
import { NbdServer } from './nbd-server.js';
import { BlockExportInfo, type BlockExportInfoValue } from './options.js';

@injectable()
export class QueryBlockExportsCommand implements QmpCommand {
  readonly name = 'query-block-exports';
  readonly summary = 'List the block exports';
  readonly returns = Qapi.list(BlockExportInfo);

  constructor(@inject(NbdServer) private readonly server: NbdServer) {}

  execute(): BlockExportInfoValue[] {
    return this.server.listAll().map((exp) => ({
      id: exp.id,
      type: 'nbd',
      'node-name': exp.nodeName,
      'shutting-down': exp.shuttingDown,
    }));
  }
}
