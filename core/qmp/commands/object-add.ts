/**
 * object-add: creates a user-creatable object (QEMU's ObjectOptions, flat:
 * `qom-type`, `id`, then the type's own properties).
 */
import { inject, injectable } from 'inversify';
import { OBJECT_OPTIONS, type ObjectRegistry } from '../../objects/object-registry.js';
import { Qapi } from '../../schema/qapi.js';
import { TOKENS } from '../../tokens.js';
import type { QmpCommand } from '../qmp-command.js';

@injectable()
export class ObjectAddCommand implements QmpCommand {
  readonly name = 'object-add';
  readonly summary = 'Create a user-creatable object (TLS credentials …)';
  readonly args = Qapi.ref(OBJECT_OPTIONS);

  constructor(@inject(TOKENS.ObjectRegistry) private readonly objects: ObjectRegistry) {}

  async execute(args: Record<string, unknown> & { 'qom-type': string }): Promise<void> {
    const { 'qom-type': qomType, ...props } = args;
    await this.objects.add(qomType, props);
  }
}
