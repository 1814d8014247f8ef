/**
 * Commands by name: validates arguments against the command's schema, with
 * QEMU's messages, before anything runs, then runs the command. The QMP
 * server and `layer.execute()` both come through here.
 */
import { inject, injectable } from 'inversify';
import { BlockLayerError } from '../errors.js';
import type { BlockLayerHooks } from '../hooks/block-layer-hooks.js';
import { NamedRegistry, type Disposable } from '../plugin/named-registry.js';
import { Qapi } from '../schema/qapi.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';
import type { CommandContext, QmpCommand } from './qmp-command.js';

const NO_ARGUMENTS = Qapi.struct('q_empty', {});

@injectable()
export class CommandRegistry {
  private readonly commands = new NamedRegistry<QmpCommand>('command');

  constructor(
    @inject(TOKENS.QapiValidator) private readonly validator: QapiValidator,
    @inject(TOKENS.BlockLayerHooks) private readonly hooks: BlockLayerHooks,
  ) {}

  register(command: QmpCommand, plugin: string): Disposable {
    return this.commands.register(command.name, command, plugin);
  }

  get(name: string): QmpCommand | undefined {
    return this.commands.get(name);
  }

  owner(name: string): string | undefined {
    return this.commands.owner(name);
  }

  list(): QmpCommand[] {
    return this.commands.values();
  }

  /** Validates and runs `name`; rejects with a BlockLayerError as QMP would report it. */
  async execute(name: string, args: unknown = {}, context: CommandContext = {}): Promise<unknown> {
    const command = this.commands.get(name);
    if (command === undefined) throw new BlockLayerError(`The command ${name} has not been found`, 'CommandNotFound');
    return this.run(command, args, context);
  }

  /** Runs a command already looked up (the QMP session checks OOB and negotiation in between). */
  async run(command: QmpCommand, args: unknown, context: CommandContext): Promise<unknown> {
    // Handlers get the arguments as sent (QEMU's has_* semantics); defaults are theirs to apply.
    const valid = this.validator.assert(command.args ?? NO_ARGUMENTS, args) as Record<string, unknown>;
    try {
      const result = (await command.execute(valid, context)) ?? {};
      this.hooks.commandExecuted.call({ command: command.name, arguments: valid, result });
      return result;
    } catch (error) {
      const failure = error instanceof Error ? error : new Error(String(error));
      this.hooks.commandExecuted.call({ command: command.name, arguments: valid, error: failure });
      throw failure;
    }
  }
}
