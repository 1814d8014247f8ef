/** block-export-del: delete an export; `safe` (the default) refuses while clients use it, `hard` disconnects them. */
import { inject, injectable } from 'inversify';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import type { Static } from '../../core/schema/qapi.js';
import { NbdServer } from './nbd-server.js';
import { BlockExportDel } from './options.js';

type Args = Static<typeof BlockExportDel>;

@injectable()
export class BlockExportDelCommand implements QmpCommand<Args> {
  readonly name = 'block-export-del';
  readonly summary = 'Delete an export (BLOCK_EXPORT_DELETED once its clients are gone)';
  readonly args = BlockExportDel;

  constructor(@inject(NbdServer) private readonly server: NbdServer) {}

  async execute(args: Args): Promise<void> {
    await this.server.deleteExport(args.id, args.mode);
  }
}
