/**
 * The mirror job (QEMU's block/mirror.c mirror_run): after the first pass
 * is marked (mirror-scan.ts), it copies dirty clusters until none is left
 * and nothing is in flight, then flushes the target and is ready
 * (BLOCK_JOB_READY), and keeps copying what the guest dirties until it is
 * completed or cancelled.
 *
 * - Each iteration claims a run of dirty clusters (at most buf-size, none
 *   another copy is moving), accounts it to the rate limiter (its zeroes
 *   only if the target cannot write them by deallocating), and copies it
 *   in requests of at most 1 MiB, 16 and buf-size bytes in flight; then it
 *   sleeps as long as the limiter says.
 * - The loop (in sync, ready, completion's drain) is core/copy/convergence.ts,
 *   shared with active commit; this file is the mirror's side of it.
 * - Into a target naming a backing file it has not open (drive-mirror's),
 *   with the granularity below its cluster size, copies are widened to
 *   whole target clusters until copied once (mirror-cow.ts); buf-size is
 *   at least one target cluster then.
 * - Copy failures go to on-source-error / on-target-error once the copies
 *   in flight have ended: report fails the job, ignore retries (the
 *   clusters are dirty again), stop pauses it until resumed.
 * - Completion (job-complete, or a soft cancel once ready): the source is
 *   drained with the job inside, and if nothing is dirty any more the
 *   target is flushed and the run ends with the source still drained, so
 *   no write can slip in before the pivot at finalisation (mirror-pivot.ts).
 *   Before ready, any cancel is a force cancel; after it, block-job-cancel
 *   without force makes the job finish without pivot (COMPLETED). Unless
 *   the job failed, drive-mirror's target gets its backing node before the
 *   pivot (QEMU's mirror_exit_common).
 */
import type { BlockNode } from '../../core/block/block-node.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import { type ClaimedRange, CopyError } from '../../core/copy/block-copy.js';
import { Convergence, type ConvergingCopy, MAX_IN_FLIGHT } from '../../core/copy/convergence.js';
import { BlockLayerError, toBlockIoError } from '../../core/errors.js';
import { type BlockdevOnErrorValue, errorAction } from '../../core/job/error-policy.js';
import type { Job } from '../../core/job/job.js';
import type { JobDriver } from '../../core/job/job-driver.js';
import type { MirrorGeometry } from './mirror-checks.js';
import { MirrorCow } from './mirror-cow.js';
import type { MirrorPivot } from './mirror-pivot.js';
import { scanSource, type ScanSettings } from './mirror-scan.js';
import type { MirrorState } from './mirror-state.js';

/** Pause before retrying after an ignored error, so a persistent one does not spin. */
const IGNORED_ERROR_BACKOFF_NS = 100_000_000;

export interface MirrorJobParts {
  source: BlockNode;
  /** The source as the job reads it (the filter's child edge: the job's requests pass drains). */
  sourceChild: NodeChild;
  /** The job's edge to the target. */
  targetChild: NodeChild;
  state: MirrorState;
  pivot: MirrorPivot;
  geometry: MirrorGeometry;
  scan: ScanSettings;
  onSourceError: BlockdevOnErrorValue;
  onTargetError: BlockdevOnErrorValue;
  /** Closes a target the command opened (drive-mirror), once the job lets go of it. */
  releaseTarget: () => Promise<void>;
  /** Gives drive-mirror's target its backing node, when the job did not fail. */
  linkTargetBacking: () => Promise<void>;
}

export class MirrorJob implements JobDriver, ConvergingCopy {
  private parts!: MirrorJobParts;
  readonly ops = new Set<Promise<void>>();
  private bufferInUse = 0;
  private cursor = 0;
  private convergence!: Convergence;
  private cow: MirrorCow | undefined;
  private bufSize = 0;
  private backingLinked = false;

  /** Hands the job what it works on, once the command has set it up (the job exists first, as in QEMU). */
  init(parts: MirrorJobParts): void {
    this.parts = parts;
    this.convergence = new Convergence(this, parts.source);
  }

  async run(job: Job): Promise<void> {
    try {
      await this.mirror(job);
    } finally {
      // QEMU's immediate_exit: copies in flight end, and the source stays drained until the job finalises.
      await this.convergence.settle();
      await this.convergence.drainSource(job);
    }
  }

  complete(job: Job): void {
    if (!this.convergence.ready) throw new BlockLayerError(`The active block job '${job.id}' cannot be completed`);
    this.parts.pivot.prepareCompletion(job);
    this.convergence.completeRequested = true;
    job.wake();
  }

  /** QEMU's mirror_cancel: before ready (and once the run is over) every cancel is forced. */
  cancel(job: Job, force: boolean): boolean {
    return force || !(job.status === 'ready' || job.status === 'standby');
  }

  async prepare(job: Job): Promise<void> {
    // As QEMU: the backing link comes first; if it fails, the pivot still happens and the job fails.
    let linkFailure: unknown;
    if (!this.backingLinked) {
      this.backingLinked = true;
      await this.parts.linkTargetBacking().catch((error: unknown) => (linkFailure = error));
    }
    await this.parts.pivot.finish(job, this.convergence.completeRequested, this.convergence.drained);
    if (linkFailure !== undefined) throw linkFailure;
  }

  async abort(job: Job): Promise<void> {
    await this.parts.pivot.finish(job, false, this.convergence.drained).catch(() => undefined);
  }

  async clean(): Promise<void> {
    await this.parts.releaseTarget();
  }

  private async mirror(job: Job): Promise<void> {
    const { source, sourceChild, targetChild, state, scan } = this.parts;
    if (source.length !== targetChild.length) throw new BlockLayerError('Source and target image have different sizes');
    if (source.length === 0) return this.mirrorNothing(job);
    const { geometry } = this.parts;
    this.cow = await MirrorCow.forTarget(targetChild.node, geometry.granularity, state.bitmap.clusters);
    this.bufSize = Math.max(geometry.bufSize, this.cow?.clusterSize ?? 0);
    await scanSource(job, state, sourceChild, targetChild, scan);
    state.active = true;
    await this.convergence.run(job);
  }

  /** A zero-length source is in sync at once; it waits for complete or cancel. */
  private async mirrorNothing(job: Job): Promise<void> {
    this.convergence.ready = true;
    job.markReady();
    while (!this.convergence.completeRequested && !job.isCancelRequested) await job.sleep(Number.POSITIVE_INFINITY);
  }

  dirtyCount(): number {
    return this.parts.state.bitmap.count;
  }

  oneSettled(): Promise<void> {
    return this.parts.state.copy.oneSettled();
  }

  updateRemaining(): void {
    this.parts.state.updateRemaining();
  }

  /**
   * Claims the next run of dirty clusters and starts copying it (QEMU's
   * mirror_iteration), then sleeps for the rate limit. False if nothing
   * could be claimed (every dirty cluster is being copied or written).
   */
  async iteration(job: Job): Promise<boolean> {
    const { state, geometry } = this.parts;
    const { copy } = state;
    if (job.limiter.delay(0) > 0) {
      await this.rateLimitSleep(job);
      return true;
    }
    const claim = copy.claimNext(this.cursor, this.bufSize) ?? (this.cursor > 0 ? copy.claimNext(0, this.bufSize) : undefined);
    if (claim === undefined) return false;
    const bytes = copy.bytesOf(claim);
    this.cursor = claim.end < state.bitmap.clusters ? claim.end : 0;
    state.pendingBytes += bytes;
    if (job.speed > 0) job.limiter.account(await this.accountedBytes(claim));
    const opClusters = geometry.maxOp / geometry.granularity;
    for (let first = claim.first; first < claim.end; ) {
      const op = { first, end: Math.min(claim.end, first + opClusters) };
      const range = this.cow?.align(op) ?? op;
      // A widened copy also covers the claimed chunks up to its end (QEMU's bytes_handled).
      const covered = { first, end: Math.min(claim.end, Math.max(op.end, range.end)) };
      const rangeBytes = copy.bytesOf(range);
      // Not over another copy's chunks (only a widened copy can reach them).
      while (this.ops.size > 0 && (this.ops.size >= MAX_IN_FLIGHT || this.bufferInUse + rangeBytes > this.bufSize)) await Promise.race(this.ops);
      while (copy.moving(range) && !job.isCancelled && state.failures.length === 0) await copy.oneSettled();
      if (job.isCancelled || state.failures.length > 0) {
        // Give back what was not started: it stays dirty.
        const rest = { first, end: claim.end };
        copy.unclaim(rest);
        state.pendingBytes -= copy.bytesOf(rest);
        return true;
      }
      this.start(range, rangeBytes, copy.bytesOf(covered));
      first = covered.end;
    }
    await this.rateLimitSleep(job);
    return true;
  }

  /**
   * What the rate limit counts of a claim (QEMU's io_bytes_acct): its data,
   * and its zeroes unless the target writes zeroes by deallocating.
   */
  private async accountedBytes(claim: ClaimedRange): Promise<number> {
    const { sourceChild, targetChild, state } = this.parts;
    const { offset, bytes } = state.bitmap.range(claim.first, claim.end);
    const target = targetChild.node;
    if (!target.capabilities.canZero || target.settings.discard !== 'unmap') return bytes;
    const extents = await sourceChild.blockStatus(offset, bytes).catch(() => [{ offset, length: bytes, zero: false }]);
    return extents.reduce((sum, e) => sum + (e.zero ? 0 : e.length), 0);
  }

  /** Copies `range` (`bytes` long), which settles `claimed` bytes of the claim. */
  private start(range: ClaimedRange, bytes: number, claimed: number): void {
    const { state } = this.parts;
    this.bufferInUse += bytes;
    const task: Promise<void> = state.copy
      .copy(range)
      .then(() => this.cow?.markCopied(range))
      .catch((error: unknown) => state.fail(error as CopyError))
      .finally(() => {
        this.ops.delete(task);
        this.bufferInUse -= bytes;
        state.pendingBytes -= claimed;
      });
    this.ops.add(task);
  }

  /** QEMU's block_job_ratelimit_sleep: until the limiter lets the next iteration go (woken by pause, cancel, a new speed). */
  private async rateLimitSleep(job: Job): Promise<void> {
    for (;;) {
      const wait = job.limiter.delay(0);
      if (wait <= 0 || job.paused || job.isCancelled) return;
      await job.nap(wait);
    }
  }

  /** Flushes the target (before ready, and before completing); a failure goes to on-target-error. */
  async flushDestination(): Promise<boolean> {
    const { state, targetChild } = this.parts;
    try {
      await targetChild.flush();
      return true;
    } catch (error) {
      state.fail(new CopyError('write', toBlockIoError(error)));
      return false;
    }
  }

  /**
   * The failures since the last look, once the copies in flight have ended:
   * a BLOCK_JOB_ERROR for each, and the strongest action. A reported
   * failure ends the job with its error; a stop pauses the job (paused and
   * io-status set before the event, as in QEMU) and returns once it is
   * resumed; ignored ones are retried after a short pause.
   */
  async handleFailures(job: Job): Promise<void> {
    const { state } = this.parts;
    if (state.failures.length === 0) return;
    await this.convergence.settle();
    const failures = state.failures.splice(0).map((failure) => {
      const policy = failure.operation === 'read' ? this.parts.onSourceError : this.parts.onTargetError;
      return { failure, action: errorAction(policy, failure.ioError) };
    });
    const report = failures.find((f) => f.action === 'report')?.failure.ioError;
    const stop = report === undefined ? failures.find((f) => f.action === 'stop')?.failure.ioError : undefined;
    const parked = stop === undefined ? undefined : job.stopOnError(stop.errno === 'ENOSPC' ? 'nospace' : 'failed');
    for (const { failure, action } of failures) {
      job.publish('BLOCK_JOB_ERROR', { device: job.id, operation: failure.operation, action });
    }
    if (report !== undefined) {
      state.failed = true;
      throw report;
    }
    if (parked !== undefined) await parked;
    else await job.nap(IGNORED_ERROR_BACKOFF_NS);
  }
}
