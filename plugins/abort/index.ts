/** Plugin: the `abort` transaction action, whose prepare always fails (to test rollback, as in QEMU). */
import { ContainerModule } from 'inversify';
import { BlockLayerError } from '../../core/errors.js';
import type { Plugin } from '../../core/plugin/plugin.js';
import { Qapi } from '../../core/schema/qapi.js';
import { TOKENS } from '../../core/tokens.js';
import type { TransactionActionContribution } from '../../core/transaction/transaction-action.js';

const abortAction: TransactionActionContribution = {
  type: 'abort',
  data: Qapi.struct('Abort', {}),
  groupable: true,
  prepare: () => Promise.reject(new BlockLayerError('Transaction aborted using Abort action')),
};

const plugin: Plugin = {
  name: 'abort',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.TransactionActionContribution).toConstantValue(abortAction);
  }),
};

export default plugin;
