/** qmp_capabilities: ends negotiation, optionally enabling out-of-band execution. */
import { injectable } from 'inversify';
import { BlockLayerError } from '../../errors.js';
import { Qapi, type Static } from '../../schema/qapi.js';
import type { CommandContext, QmpCommand } from '../qmp-command.js';

const args = Qapi.struct('q_obj_qmp_capabilities-arg', {
  enable: Qapi.optional(Qapi.list(Qapi.enum('QMPCapability', ['oob']))),
});

@injectable()
export class QmpCapabilitiesCommand implements QmpCommand<Static<typeof args>> {
  readonly name = 'qmp_capabilities';
  readonly summary = 'End capabilities negotiation and enter command mode';
  readonly args = args;
  readonly allowInNegotiation = true;

  execute(input: Static<typeof args>, context: CommandContext): void {
    if (context.session === undefined || context.session.negotiated) {
      throw new BlockLayerError('Capabilities negotiation is already complete, command ignored', 'CommandNotFound');
    }
    context.session.completeNegotiation(input.enable ?? []);
  }
}
