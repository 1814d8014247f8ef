/**
 * A transaction action (QEMU's BlkActionOps), contributed by a plugin under
 * its QMP type name. The contract, as QEMU's: `prepare` is the only step
 * that may fail, and a failing `prepare` undoes what it did itself; once
 * every action is prepared, all `commit`, or (when one failed) the prepared
 * ones `abort` in reverse order; then `clean` always runs, in list order.
 */
import type { TSchema } from '@sinclair/typebox';
import type { BlockNode } from '../block/block-node.js';
import type { JobTxn } from '../job/job-txn.js';

export interface PreparedAction {
  /** Makes the prepared change take effect (start the job). Must not fail. */
  commit?(): Promise<void> | void;
  /** Undoes what prepare did. Must not fail. */
  abort?(): Promise<void> | void;
  /** Releases what prepare took, after commit or abort. */
  clean?(): Promise<void> | void;
}

export interface TransactionContext {
  /** `individual`: each job ends on its own; `grouped`: one failing or cancelled job cancels the others. */
  readonly completionMode: 'individual' | 'grouped';
  /** The group of a grouped transaction's jobs; undefined in individual mode. */
  readonly jobTxn: JobTxn | undefined;
  /** Drains `node` until the transaction is cleaned up (what makes a multi-disk transaction atomic). */
  drain(node: BlockNode): Promise<void>;
}

export interface TransactionActionContribution<D = any> {
  /** The action's `type` in QMP `transaction` (e.g. 'blockdev-backup', 'abort'). */
  readonly type: string;
  /** Schema of the action's `data`. */
  readonly data: TSchema;
  /** May appear in a transaction with completion-mode `grouped` (QEMU: the backups, and abort). */
  readonly groupable?: boolean;
  /** Does the work and says how to finish or undo it. */
  prepare(data: D, context: TransactionContext): Promise<PreparedAction>;
}
