/** query-commands: every command a client may execute, newest registration first as QEMU lists them. */
import { inject, injectable } from 'inversify';
import { Qapi } from '../../schema/qapi.js';
import { TOKENS } from '../../tokens.js';
import type { CommandRegistry } from '../command-registry.js';
import type { QmpCommand } from '../qmp-command.js';

const returns = Qapi.list(Qapi.struct('CommandInfo', { name: Qapi.str() }));

@injectable()
export class QueryCommandsCommand implements QmpCommand {
  readonly name = 'query-commands';
  readonly summary = 'List the available commands';
  readonly returns = returns;

  constructor(@inject(TOKENS.CommandRegistry) private readonly registry: CommandRegistry) {}

  execute(): { name: string }[] {
    return this.registry
      .list()
      .map((c) => ({ name: c.name }))
      .reverse();
  }
}
