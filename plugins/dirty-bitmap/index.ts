/** Plugin: named dirty bitmaps — the block-dirty-bitmap-* commands and transaction actions. */
import { ContainerModule } from 'inversify';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { BITMAP_OPERATIONS, bitmapAction, bitmapCommands } from './bitmap-commands.js';
import { BitmapOperations } from './bitmap-operations.js';

const plugin: Plugin = {
  name: 'dirty-bitmap',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(BitmapOperations).toSelf().inSingletonScope();
    bind(TOKENS.CommandContribution)
      .toDynamicValue((c) => bitmapCommands(c.get(BitmapOperations)))
      .inSingletonScope();
    for (const spec of BITMAP_OPERATIONS) {
      bind(TOKENS.TransactionActionContribution)
        .toDynamicValue((c) => bitmapAction(spec, c.get(BitmapOperations)))
        .inSingletonScope();
    }
  }),
};

export default plugin;
