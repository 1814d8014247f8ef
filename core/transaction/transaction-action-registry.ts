/**
 * Transaction actions by QMP type name; a second plugin contributing the
 * same type is a load error. Builds TransactionAction, the union (tag
 * `type`, members `type` and `data`) the `transaction` command validates.
 */
import { inject, injectable } from 'inversify';
import { NamedRegistry, type Disposable } from '../plugin/named-registry.js';
import { Qapi } from '../schema/qapi.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';
import type { TransactionActionContribution } from './transaction-action.js';

export const TRANSACTION_ACTION = 'TransactionAction';

@injectable()
export class TransactionActionRegistry {
  private readonly actions = new NamedRegistry<TransactionActionContribution>('transaction action');

  constructor(@inject(TOKENS.QapiValidator) private readonly validator: QapiValidator) {
    this.publishSchema();
  }

  register(action: TransactionActionContribution, plugin: string): Disposable {
    const registration = this.actions.register(action.type, action, plugin);
    this.publishSchema();
    return {
      dispose: () => {
        registration.dispose();
        this.publishSchema();
      },
    };
  }

  get(type: string): TransactionActionContribution | undefined {
    return this.actions.get(type);
  }

  list(): TransactionActionContribution[] {
    return this.actions.values();
  }

  private publishSchema(): void {
    const branches = this.actions.values().map((action) =>
      Qapi.struct(`q_obj_${action.type}-wrapper`, { type: Qapi.literal(action.type), data: action.data }),
    );
    this.validator.define({ ...Qapi.flatUnion(TRANSACTION_ACTION, 'type', branches), $id: TRANSACTION_ACTION });
  }
}
