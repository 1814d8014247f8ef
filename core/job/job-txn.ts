/**
 * A group of jobs that conclude together (QEMU's JobTxn). Every job has one;
 * a `grouped` transaction puts several in the same. Jobs are kept newest
 * first, the order QEMU finalises and reports them in.
 *
 * - Success: a job whose run ended waits; once every member waits, all go
 *   pending (BLOCK_JOB_PENDING for those that need job-finalize), and when
 *   none needs it (or on job-finalize), each is prepared, then each
 *   committed, cleaned, reported (BLOCK_JOB_COMPLETED, for block jobs), concluded.
 * - Failure or cancel of any member: the others are cancelled, running ones
 *   are waited for, then each is aborted, cleaned, reported (CANCELLED, or
 *   COMPLETED with its error), concluded. A job that never started reports
 *   nothing and is always dismissed.
 */
import type { Job } from './job.js';
import { RUN_OVER } from './job-states.js';

export class JobTxn {
  private readonly jobs: Job[] = [];
  private aborting = false;
  private finalizing = false;
  private readonly concluded = new Map<Job, () => void>();

  add(job: Job): void {
    this.jobs.unshift(job);
  }

  get members(): readonly Job[] {
    return this.jobs;
  }

  /** The group is being finalised: each job will conclude as it stands (QEMU does this in one go). */
  get isFinalizing(): boolean {
    return this.finalizing;
  }

  /** Resolves when `job` has concluded (or was removed). */
  whenConcluded(job: Job): Promise<void> {
    if (!this.jobs.includes(job)) return Promise.resolve();
    return new Promise((resolve) => {
      const earlier = this.concluded.get(job);
      this.concluded.set(job, () => {
        earlier?.();
        resolve();
      });
    });
  }

  /** A member's run ended (or a never-started member was cancelled). */
  async jobCompleted(job: Job): Promise<void> {
    this.updateResult(job);
    if (job.error === undefined) {
      job.transition('waiting');
      await this.completeIfAllDone();
    } else {
      await this.abort(job);
    }
  }

  /** The user cancelled a member whose run is over (waiting or pending): the whole group aborts. */
  async cancelFinished(job: Job): Promise<void> {
    await this.abort(job);
  }

  /** job-finalize on any member finalises the group. */
  async finalize(): Promise<void> {
    if (this.finalizing) return;
    this.finalizing = true;
    for (const job of [...this.jobs]) {
      try {
        await job.driver.prepare?.(job);
      } catch (error) {
        job.error = error instanceof Error ? error.message : String(error);
        this.updateResult(job);
        await this.abort(job);
        return;
      }
    }
    while (this.jobs.length > 0) await this.finalizeSingle(this.jobs[0]!);
  }

  /** QEMU's job_update_rc: a cancelled job fails with "Operation canceled"; a failed job goes aborting. */
  private updateResult(job: Job): void {
    if (job.isCancelled && job.error === undefined) job.error = 'Operation canceled';
    if (job.error !== undefined) job.transition('aborting');
  }

  private async completeIfAllDone(): Promise<void> {
    if (!this.jobs.every((j) => RUN_OVER.includes(j.status))) return;
    for (const job of this.jobs) {
      job.transition('pending');
      if (!job.autoFinalize && job.isBlockJob) job.publish('BLOCK_JOB_PENDING', { type: job.type, id: job.id });
    }
    if (this.jobs.every((j) => j.autoFinalize)) await this.finalize();
  }

  private async abort(cause: Job): Promise<void> {
    if (this.aborting) return;
    this.aborting = true;
    for (const other of this.jobs) if (other !== cause) other.requestCancel(false);
    for (const other of [...this.jobs]) {
      if (other.hasStarted && !RUN_OVER.includes(other.status)) await other.whenRunEnded;
    }
    while (this.jobs.length > 0) await this.finalizeSingle(this.jobs[0]!);
  }

  private async finalizeSingle(job: Job): Promise<void> {
    this.updateResult(job);
    if (job.error === undefined) await job.driver.commit?.(job);
    else await job.driver.abort?.(job);
    // The job lets go of its nodes first, so clean can close what it no longer needs.
    job.releaseNodes();
    await job.driver.clean?.(job);
    await job.closeReleased();
    if (job.hasStarted && job.isBlockJob) {
      if (job.isCancelled) job.publish('BLOCK_JOB_CANCELLED', job.eventData());
      else if (job.error !== undefined) job.publish('BLOCK_JOB_COMPLETED', { ...job.eventData(), error: job.error });
      else job.publish('BLOCK_JOB_COMPLETED', job.eventData());
    }
    this.jobs.splice(this.jobs.indexOf(job), 1);
    job.transition('concluded');
    if (job.autoDismiss || !job.hasStarted) job.dismiss();
    this.concluded.get(job)?.();
    this.concluded.delete(job);
  }
}
