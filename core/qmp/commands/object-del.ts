/** object-del: deletes a user-creatable object; what already uses it keeps working (QEMU holds a reference). */
import { inject, injectable } from 'inversify';
import type { ObjectRegistry } from '../../objects/object-registry.js';
import { Qapi, type Static } from '../../schema/qapi.js';
import { TOKENS } from '../../tokens.js';
import type { QmpCommand } from '../qmp-command.js';

const args = Qapi.struct('q_obj_object-del-arg', { id: Qapi.str() });

@injectable()
export class ObjectDelCommand implements QmpCommand<Static<typeof args>> {
  readonly name = 'object-del';
  readonly summary = 'Delete a user-creatable object';
  readonly args = args;

  constructor(@inject(TOKENS.ObjectRegistry) private readonly objects: ObjectRegistry) {}

  async execute(input: Static<typeof args>): Promise<void> {
    await this.objects.del(input.id);
  }
}
