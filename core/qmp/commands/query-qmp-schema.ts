/** query-qmp-schema: introspection generated from the schemas that validate the commands. */
import { inject, injectable } from 'inversify';
import { QapiIntrospection, type SchemaInfo } from '../../schema/qapi-introspection.js';
import type { QapiValidator } from '../../schema/qapi-validator.js';
import { Qapi } from '../../schema/qapi.js';
import { TOKENS } from '../../tokens.js';
import type { CommandRegistry } from '../command-registry.js';
import type { QmpCommand } from '../qmp-command.js';

const returns = Qapi.list(
  Qapi.struct('SchemaInfo', { name: Qapi.str(), 'meta-type': Qapi.str() }, { additionalProperties: true }),
);

@injectable()
export class QueryQmpSchemaCommand implements QmpCommand {
  readonly name = 'query-qmp-schema';
  readonly summary = 'Describe every command and type (QEMU SchemaInfo, type names masked)';
  readonly returns = returns;

  constructor(
    @inject(TOKENS.CommandRegistry) private readonly registry: CommandRegistry,
    @inject(TOKENS.QapiValidator) private readonly validator: QapiValidator,
  ) {}

  /** Built once per set of commands: clients (libvirt, the iotests) ask for it often, and it only changes as plugins load. */
  private cached: { commands: number; schema: SchemaInfo[] } | undefined;

  execute(): SchemaInfo[] {
    const listed = this.registry.list();
    if (this.cached?.commands !== listed.length) {
      const commands = listed.map((c) => ({ name: c.name, args: c.args, returns: c.returns, allowOob: c.allowOob }));
      this.cached = { commands: listed.length, schema: QapiIntrospection.build(commands, [], (name) => this.validator.lookup(name)) };
    }
    return this.cached.schema;
  }
}
