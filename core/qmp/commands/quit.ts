/** quit: shut the daemon down (running jobs are cancelled first); the reply is sent before it goes. */
import { inject, injectable } from 'inversify';
import type { Lifecycle } from '../../lifecycle.js';
import { TOKENS } from '../../tokens.js';
import type { QmpCommand } from '../qmp-command.js';

@injectable()
export class QuitCommand implements QmpCommand {
  readonly name = 'quit';
  readonly summary = 'Shut down';

  constructor(@inject(TOKENS.Lifecycle) private readonly lifecycle: Lifecycle) {}

  async execute(): Promise<void> {
    await this.lifecycle.requestShutdown('host-qmp-quit');
  }
}
