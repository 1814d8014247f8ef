/** transaction: run several actions atomically (QEMU's TransactionAction list and properties). */
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';
import { TRANSACTION_ACTION } from '../../core/transaction/transaction-action-registry.js';
import type { TransactionRunner, TransactionStep } from '../../core/transaction/transaction-runner.js';

const args = Qapi.struct('q_obj_transaction-arg', {
  actions: Qapi.list(Qapi.ref<TransactionStep>(TRANSACTION_ACTION)),
  properties: Qapi.optional(
    Qapi.struct('TransactionProperties', {
      'completion-mode': Qapi.optional(
        Qapi.enum('ActionCompletionMode', ['individual', 'grouped'], { default: 'individual' }),
      ),
    }),
  ),
});

export function transactionCommand(runner: TransactionRunner): QmpCommand<Static<typeof args>> {
  return {
    name: 'transaction',
    summary: 'Run actions atomically: all take effect or none',
    args,
    execute: (input) => runner.run(input.actions, (input.properties?.['completion-mode'] as 'grouped' | undefined) ?? 'individual'),
  };
}
