/** Transaction actions by QMP type name; a second plugin contributing the same type is a load error. */
import { injectable } from 'inversify';
import { NamedRegistry, type Disposable } from '../plugin/named-registry.js';
import type { TransactionActionContribution } from './transaction-action.js';

@injectable()
export class TransactionActionRegistry {
  private readonly actions = new NamedRegistry<TransactionActionContribution>('transaction action');

  register(action: TransactionActionContribution, plugin: string): Disposable {
    return this.actions.register(action.type, action, plugin);
  }

  get(type: string): TransactionActionContribution | undefined {
    return this.actions.get(type);
  }

  list(): TransactionActionContribution[] {
    return this.actions.values();
  }
}
