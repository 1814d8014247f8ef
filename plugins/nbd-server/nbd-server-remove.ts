/** nbd-server-remove (deprecated in QEMU): block-export-del of the export named `name` (nbd-server-add's id). */
import { inject, injectable } from 'inversify';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import type { Static } from '../../core/schema/qapi.js';
import { NbdServer } from './nbd-server.js';
import { NbdServerRemove } from './options.js';

type Args = Static<typeof NbdServerRemove>;

@injectable()
export class NbdServerRemoveCommand implements QmpCommand<Args> {
  readonly name = 'nbd-server-remove';
  readonly summary = 'Delete an NBD export (deprecated: use block-export-del)';
  readonly args = NbdServerRemove;

  constructor(@inject(NbdServer) private readonly server: NbdServer) {}

  async execute(args: Args): Promise<void> {
    await this.server.deleteExport(args.name, args.mode);
  }
}
