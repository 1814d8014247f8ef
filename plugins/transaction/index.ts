/** Plugin: the QMP `transaction` command over the actions plugins contribute. */
import { ContainerModule } from 'inversify';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import type { TransactionRunner } from '../../core/transaction/transaction-runner.js';
import { transactionCommand } from './transaction-command.js';

const plugin: Plugin = {
  name: 'transaction',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.CommandContribution)
      .toDynamicValue((c) => transactionCommand(c.get<TransactionRunner>(TOKENS.TransactionRunner)))
      .inSingletonScope();
  }),
};

export default plugin;
