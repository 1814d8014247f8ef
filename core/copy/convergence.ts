/**
 * The loop mirror and active commit share (QEMU runs an active commit as a
 * mirror: mirror_run): copy dirty clusters, several copies in flight,
 * until none is dirty and none in flight; flush the destination and be
 * ready (BLOCK_JOB_READY); then keep the destination in sync until the job
 * is completed or cancelled. Completing drains the source with the job
 * inside, and once nothing is dirty and the destination is flushed the
 * loop ends with the source still drained, so no write slips in before the
 * job switches its users over at finalisation.
 *
 * - Pause, drain and error-stop take effect between iterations, once the
 *   copies in flight have ended, so progress stands still while paused.
 * - What a job does differently (how it claims and copies, which policy
 *   an error meets, what it flushes) it hands in as ConvergingCopy.
 */
import type { BlockNode } from '../block/block-node.js';
import { DrainSection } from '../block/drain-section.js';
import type { Job } from '../job/job.js';

/** QEMU's BLOCK_JOB_SLICE_TIME: how long a ready, idle job sleeps before looking again. */
const SLICE_NS = 100_000_000;

/** The job's side of the loop. */
export interface ConvergingCopy {
  /** Copies in flight. */
  readonly ops: ReadonlySet<Promise<void>>;
  /** Dirty clusters left (being copied or not). */
  dirtyCount(): number;
  /** Claims and starts the next copies (and sleeps for the rate limit); false if nothing could be claimed. */
  iteration(job: Job): Promise<boolean>;
  /** Resolves when a copy of the shared engine settles (one of another user may hold the dirty clusters). */
  oneSettled(): Promise<void>;
  /** Failures since the last look, after the copies in flight have ended; throws to fail the job. */
  handleFailures(job: Job): Promise<void>;
  /** QEMU's job_progress_set_remaining. */
  updateRemaining(): void;
  /** Flushes the destination; false if that failed (the failure is handed to handleFailures). */
  flushDestination(): Promise<boolean>;
}

/** Copies in flight at most (QEMU's MAX_IN_FLIGHT). */
export const MAX_IN_FLIGHT = 16;

export class Convergence {
  /** In sync once: BLOCK_JOB_READY was sent. */
  ready = false;
  /** job-complete (or a soft cancel) asked for the end. */
  completeRequested = false;
  private drainedSection: DrainSection | undefined;

  constructor(
    private readonly copy: ConvergingCopy,
    /** The node whose writes the job follows: drained to complete. */
    private readonly source: BlockNode,
  ) {}

  /** The source's drain the loop ended with, held until the job finalises. */
  get drained(): DrainSection | undefined {
    return this.drainedSection;
  }

  /** Runs until in sync after completion was asked for (or a cancel); the caller scanned the first pass. */
  async run(job: Job): Promise<void> {
    const { copy } = this;
    for (;;) {
      await copy.handleFailures(job);
      if (job.paused || job.isCancelled) {
        await this.settle();
        await job.pausePoint();
      }
      copy.updateRemaining();
      if (copy.dirtyCount() > 0) {
        if (copy.ops.size < MAX_IN_FLIGHT && (await copy.iteration(job))) continue;
        await (copy.ops.size > 0 ? Promise.race(copy.ops) : copy.oneSettled());
        continue;
      }
      if (copy.ops.size > 0) {
        await Promise.race(copy.ops);
        continue;
      }
      if (!this.ready) {
        if (!(await copy.flushDestination())) continue;
        this.ready = true;
        job.markReady();
      }
      if (this.completeRequested || job.isCancelRequested) {
        if (await this.finalSync(job)) return;
        continue;
      }
      await job.nap(SLICE_NS);
    }
  }

  /** Waits for every copy in flight. */
  async settle(): Promise<void> {
    while (this.copy.ops.size > 0) await Promise.all(this.copy.ops);
  }

  /** Drains the source, the job included but not waited for (it is the one waiting): the job counts as paused, as in QEMU. */
  async drainSource(job: Job): Promise<void> {
    if (this.drainedSection !== undefined) return;
    this.drainedSection = new DrainSection(job);
    this.drainedSection.addNode(this.source);
    await this.drainedSection.settle();
  }

  /** Drains the source; in sync (nothing dirty, destination flushed): true, and the source stays drained. */
  private async finalSync(job: Job): Promise<boolean> {
    await this.drainSource(job);
    if (this.copy.dirtyCount() === 0 && (await this.copy.flushDestination())) return true;
    this.drainedSection!.end();
    this.drainedSection = undefined;
    return false;
  }
}
