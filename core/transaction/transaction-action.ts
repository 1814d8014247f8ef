/**
 * A transaction action (QEMU's BlkActionOps), contributed by a plugin under
 * its QMP type name. The contract, as QEMU's: `prepare` is the only step
 * that may fail; after every action prepared, either all `commit` or (on
 * any failure) `abort` runs for each prepared action in reverse order; then
 * `clean` always runs.
 */
import type { TSchema } from '@sinclair/typebox';

export interface PreparedAction {
  /** Makes the prepared change permanent. Must not fail. */
  commit?(): Promise<void> | void;
  /** Undoes what prepare did. Must not fail. */
  abort?(): Promise<void> | void;
  /** Releases what prepare took, after commit or abort. */
  clean?(): Promise<void> | void;
}

export interface TransactionContext {
  /** `individual`: each job ends on its own; `grouped`: one failing job cancels the others. */
  readonly completionMode: 'individual' | 'grouped';
}

export interface TransactionActionContribution<D = any> {
  /** The action's `type` in QMP `transaction` (e.g. 'blockdev-backup', 'abort'). */
  readonly type: string;
  /** Schema of the action's `data`. */
  readonly data: TSchema;
  /** Does the work and says how to finish or undo it. */
  prepare(data: D, context: TransactionContext): Promise<PreparedAction>;
}
