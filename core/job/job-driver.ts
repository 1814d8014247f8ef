/**
 * The job seam (QEMU's JobDriver): what a job type implements. The Job runs
 * it and owns the lifecycle; the driver does the work and says how to
 * finish or undo it. Contract, as QEMU's:
 *
 * - `run` is called once, when the job moves from created to running. It
 *   calls `await job.pausePoint()` between units of work (pause, drain and
 *   cancel take effect there; it throws JobCancelled once cancelled) and
 *   resolves when the work is done, which moves the job to waiting. It
 *   throws to fail the job; the message becomes the job's `error`.
 * - Finalisation, for each job of a group once all are done: `prepare` (may
 *   still fail, and then the whole group aborts), then exactly one of
 *   `commit` (success) or `abort` (failure or cancel, also for a job that
 *   never started), then always `clean`.
 * - `complete` is for jobs that reach ready (mirror): the user asked to
 *   finish. Without it, job-complete fails.
 * - `cancel` is told at once when cancel is requested, to stop in-flight
 *   work early; the job still ends through `run` returning or throwing. It
 *   returns whether the cancel is forced: `false` makes it a soft cancel
 *   (a ready mirror finishes its work and ends COMPLETED, QEMU's
 *   mirror_cancel); no return value means forced.
 */
import type { Job } from './job.js';

export interface JobDriver {
  run(job: Job): Promise<void>;
  prepare?(job: Job): Promise<void>;
  commit?(job: Job): Promise<void> | void;
  abort?(job: Job): Promise<void> | void;
  clean?(job: Job): Promise<void> | void;
  complete?(job: Job): void;
  cancel?(job: Job, force: boolean): boolean | void;
}
