/** nbd-server-stop: delete every NBD export (each with BLOCK_EXPORT_DELETED), disconnect every client, stop listening. */
import { inject, injectable } from 'inversify';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { NbdServer } from './nbd-server.js';

@injectable()
export class NbdServerStopCommand implements QmpCommand {
  readonly name = 'nbd-server-stop';
  readonly summary = 'Stop the NBD server: delete its exports and disconnect its clients';

  constructor(@inject(NbdServer) private readonly server: NbdServer) {}

  async execute(): Promise<void> {
    await this.server.stop();
  }
}
