/**
 * The six dirty bitmap operations, each both a QMP command and a
 * transaction action of the same name (as in QEMU 7.2). The command runs
 * the action's prepare and commits it at once; it does not go through the
 * transaction runner, which would drain every node (QEMU's commands do
 * not either).
 */
import type { TSchema } from '@sinclair/typebox';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import type { PreparedAction, TransactionActionContribution } from '../../core/transaction/transaction-action.js';
import type { BitmapOperations } from './bitmap-operations.js';
import { BlockDirtyBitmap, BlockDirtyBitmapAdd, BlockDirtyBitmapMerge } from './options.js';

export interface BitmapOperationSpec {
  readonly name: string;
  readonly summary: string;
  readonly args: TSchema;
  prepare(ops: BitmapOperations, args: any): PreparedAction | Promise<PreparedAction>;
}

export const BITMAP_OPERATIONS: readonly BitmapOperationSpec[] = [
  {
    name: 'block-dirty-bitmap-add',
    summary: 'Create a dirty bitmap on a node',
    args: BlockDirtyBitmapAdd,
    prepare: (ops, args) => ops.add(args),
  },
  {
    name: 'block-dirty-bitmap-remove',
    summary: 'Delete a dirty bitmap',
    args: BlockDirtyBitmap,
    prepare: (ops, args) => ops.remove(args),
  },
  {
    name: 'block-dirty-bitmap-clear',
    summary: 'Mark everything clean in a dirty bitmap',
    args: BlockDirtyBitmap,
    prepare: (ops, args) => ops.clear(args),
  },
  {
    name: 'block-dirty-bitmap-enable',
    summary: 'Make a dirty bitmap record writes',
    args: BlockDirtyBitmap,
    prepare: (ops, args) => ops.enable(args),
  },
  {
    name: 'block-dirty-bitmap-disable',
    summary: 'Stop a dirty bitmap recording writes',
    args: BlockDirtyBitmap,
    prepare: (ops, args) => ops.disable(args),
  },
  {
    name: 'block-dirty-bitmap-merge',
    summary: 'Add what some dirty bitmaps mark to another',
    args: BlockDirtyBitmapMerge,
    prepare: (ops, args) => ops.merge(args),
  },
];

/** The commands: prepare, then commit and clean at once. */
export function bitmapCommands(ops: BitmapOperations): QmpCommand[] {
  return BITMAP_OPERATIONS.map((spec) => ({
    name: spec.name,
    summary: spec.summary,
    args: spec.args,
    async execute(args: unknown): Promise<void> {
      const prepared = await spec.prepare(ops, args);
      await prepared.commit?.();
      await prepared.clean?.();
    },
  }));
}

/** The transaction action of `spec` (not allowed with completion-mode grouped, as in QEMU). */
export function bitmapAction(spec: BitmapOperationSpec, ops: BitmapOperations): TransactionActionContribution {
  return {
    type: spec.name,
    data: spec.args,
    prepare: (args) => Promise.resolve().then(() => spec.prepare(ops, args)),
  };
}
