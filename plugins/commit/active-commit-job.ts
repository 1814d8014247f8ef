/**
 * The active commit job (QEMU 7.2 runs it as a mirror of `top` into the
 * base: commit_active_start): a dirty bitmap (one bit per `granularity`
 * bytes) is first marked with what the images from `top` down to the
 * base's overlay allocate, then dirty clusters are copied into the base by
 * the shared engine (core/copy/block-copy.ts), several copies in flight,
 * rate-limited; every write reaching `top` marks its clusters again (a tap
 * on `top`'s `afterWrite`). When nothing is dirty and nothing in flight,
 * the base is flushed and the job is ready (BLOCK_JOB_READY, type commit),
 * and keeps the base in sync until it is completed or cancelled (the loop
 * is core/copy/convergence.ts, the mirror's too).
 *
 * - Completion (job-complete, or a soft cancel once ready): `top` is
 *   drained with the job inside; once nothing is dirty and the base is
 *   flushed, the run ends with `top` still drained. At finalisation, after
 *   job-complete, every user of `top` (through the mirror_top filter: the
 *   devices and exports) switches to the base; the filter leaves the graph
 *   and the drain ends. After a soft cancel nothing switches (COMPLETED).
 * - Cancel before ready, or with force: CANCELLED, nothing switches.
 * - Errors (reads of `top`, writes of the base) go to on-error: report
 *   fails the job, stop pauses it, ignore retries after a short pause; the
 *   clusters of a failed copy stay dirty.
 * - Neither `top` nor the base may be resized while the job runs.
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import { setReadOnly } from '../../core/block/node-reopen.js';
import type { WriteRequest } from '../../core/block/request.js';
import { type BlockCopy, type ClaimedRange, CopyError } from '../../core/copy/block-copy.js';
import { Convergence, type ConvergingCopy } from '../../core/copy/convergence.js';
import { allocatedAbove } from '../../core/block/backing-chain.js';
import { BlockIoError, BlockLayerError, toBlockIoError } from '../../core/errors.js';
import { untap } from '../../core/hooks/untap.js';
import { type BlockdevOnErrorValue, handleJobError } from '../../core/job/error-policy.js';
import type { Job } from '../../core/job/job.js';
import type { JobDriver } from '../../core/job/job-driver.js';

/** Pause before retrying after an ignored error, so a persistent one does not spin. */
const IGNORED_ERROR_BACKOFF_NS = 100_000_000;
/** Bytes asked about per step while marking the first pass. */
const SCAN_STEP = 2 ** 30;

export interface ActiveCommitParts {
  graph: BlockGraph;
  top: BlockNode;
  /** The mirror_top filter above `top`. */
  filter: BlockNode;
  base: BlockNode;
  /** The image right above the base: what is allocated from `top` down to it is copied first. */
  baseOverlay: BlockNode;
  /** The job's edge to the base (writes, growth). */
  baseEdge: NodeChild;
  /** The copy engine: from the filter's edge to `top` into `baseEdge`, one bit per granule. */
  copy: BlockCopy;
  onError: BlockdevOnErrorValue;
}

export class ActiveCommitJob implements JobDriver, ConvergingCopy {
  private parts!: ActiveCommitParts;
  readonly ops = new Set<Promise<void>>();
  private readonly failures: CopyError[] = [];
  private pendingBytes = 0;
  private cursor = 0;
  private convergence!: Convergence;
  private finished = false;
  /** The job grows the base itself (the one resize allowed). */
  private growing = false;
  private tapName = '';
  private job!: Job;

  /** Hands the job what it works on and starts watching `top`'s writes (the job exists first, as in QEMU). */
  init(job: Job, parts: ActiveCommitParts): void {
    this.job = job;
    this.parts = parts;
    this.convergence = new Convergence(this, parts.top);
    this.tapName = `commit ${job.id}`;
    const refuse = { name: this.tapName, stage: 1000 };
    parts.top.hooks.afterWrite.tapPromise(this.tapName, (request) => Promise.resolve(this.written(request)));
    parts.top.hooks.beforeWrite.tapPromise(refuse, (request) => Promise.resolve(this.refuseResize(request)));
    parts.base.hooks.beforeWrite.tapPromise(refuse, (request) => Promise.resolve(this.refuseResize(request)));
  }

  async run(job: Job): Promise<void> {
    try {
      await this.sync(job);
    } finally {
      // Copies in flight end, and `top` stays drained until the job finalises (QEMU's immediate_exit).
      await this.convergence.settle();
      await this.convergence.drainSource(job);
    }
  }

  complete(job: Job): void {
    if (!this.convergence.ready) throw new BlockLayerError(`The active block job '${job.id}' cannot be completed`);
    this.convergence.completeRequested = true;
    job.wake();
  }

  /** QEMU's mirror_cancel: before ready every cancel is forced; after it, a plain one finishes without switching. */
  cancel(job: Job, force: boolean): boolean {
    return force || !(job.status === 'ready' || job.status === 'standby');
  }

  async prepare(): Promise<void> {
    await this.finish(this.convergence.completeRequested);
  }

  async abort(): Promise<void> {
    await this.finish(false).catch(() => undefined);
  }

  private get bitmap() {
    return this.parts.copy.bitmap;
  }

  private async sync(job: Job): Promise<void> {
    const { top, baseEdge } = this.parts;
    if (baseEdge.length < top.length) {
      this.growing = true;
      await baseEdge.truncate(top.length).finally(() => (this.growing = false));
    }
    await this.scan(job);
    await this.convergence.run(job);
  }

  dirtyCount(): number {
    return this.bitmap.count;
  }

  oneSettled(): Promise<void> {
    return this.parts.copy.oneSettled();
  }

  /** QEMU's mirror_dirty_init for a commit: marks what the images from `top` down to the base's overlay allocate. */
  private async scan(job: Job): Promise<void> {
    const { top, baseOverlay } = this.parts;
    for (let offset = 0; offset < top.length; ) {
      await job.pausePoint();
      const run = await allocatedAbove(top, baseOverlay, true, offset, Math.min(SCAN_STEP, top.length - offset));
      if (run.allocated) this.markDirty(offset, run.bytes);
      offset += run.bytes;
    }
    this.updateRemaining();
  }

  /** Starts copying the next run of dirty clusters; false if none could be claimed (all being copied). */
  async iteration(job: Job): Promise<boolean> {
    const { copy } = this.parts;
    for (let wait = job.limiter.delay(0); wait > 0 && !job.paused && !job.isCancelled; wait = job.limiter.delay(0)) await job.nap(wait);
    if (job.paused || job.isCancelled) return true;
    const claim = copy.claimNext(this.cursor) ?? (this.cursor > 0 ? copy.claimNext(0) : undefined);
    if (claim === undefined) return false;
    this.cursor = claim.end < this.bitmap.clusters ? claim.end : 0;
    const bytes = copy.bytesOf(claim);
    if (job.speed > 0) job.limiter.account(bytes);
    this.start(claim, bytes);
    return true;
  }

  private start(claim: ClaimedRange, bytes: number): void {
    this.pendingBytes += bytes;
    const task: Promise<void> = this.parts.copy
      .copy(claim)
      .catch((error: unknown) => this.fail(error instanceof CopyError ? error : new CopyError('read', toBlockIoError(error))))
      .finally(() => {
        this.ops.delete(task);
        this.pendingBytes -= bytes;
      });
    this.ops.add(task);
  }

  /** QEMU's job_progress_set_remaining: total = done + in flight + dirty. */
  updateRemaining(): void {
    this.job.totalProgress = this.job.currentProgress + this.pendingBytes + this.bitmap.dirtyBytes;
  }

  private markDirty(offset: number, bytes: number): void {
    const { first, end } = this.bitmap.clustersOf(offset, bytes);
    for (let c = first; c < end && c < this.bitmap.clusters; c++) this.bitmap.set(c);
    this.job.wake();
  }

  private fail(error: CopyError): void {
    this.failures.push(error);
    this.job.wake();
  }

  /** Something reached `top`: copy it (again). */
  private written(request: WriteRequest): void {
    if (request.kind !== 'truncate' && !this.finished) this.markDirty(request.offset, request.bytes);
  }

  private refuseResize(request: WriteRequest): Error | undefined {
    if (request.kind !== 'truncate' || this.finished || (this.growing && request.node === this.parts.base)) return undefined;
    return new BlockIoError('EPERM', `Node '${request.node.nodeName}' is busy: block device is in use by block job: commit`);
  }

  async flushDestination(): Promise<boolean> {
    try {
      await this.parts.baseEdge.flush();
      return true;
    } catch (error) {
      this.fail(new CopyError('write', toBlockIoError(error)));
      return false;
    }
  }

  /**
   * The failures since the last look, once the copies in flight have ended:
   * a BLOCK_JOB_ERROR for each; a reported one ends the job, a stop pauses
   * it until resumed, ignored ones are retried after a short pause.
   */
  async handleFailures(job: Job): Promise<void> {
    if (this.failures.length === 0) return;
    await this.convergence.settle();
    for (const failure of this.failures.splice(0)) {
      const action = await handleJobError(job, this.parts.onError, failure.operation, failure.ioError);
      if (action === 'report') throw failure.ioError;
      if (action === 'ignore') await job.nap(IGNORED_ERROR_BACKOFF_NS);
    }
  }

  /**
   * How the job ends in the graph, once: the write watch stops, the job lets
   * go of its nodes, after job-complete every user of `top` switches to the
   * base, the filter leaves the graph, and the drain ends.
   */
  private async finish(pivot: boolean): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    const { graph, top, base, filter } = this.parts;
    untap(top.hooks.afterWrite, this.tapName);
    untap(top.hooks.beforeWrite, this.tapName);
    untap(base.hooks.beforeWrite, this.tapName);
    this.job.releaseNodes();
    try {
      if (pivot) {
        // QEMU's mirror_exit_common: the base takes the mode of what it replaces (the active layer: read-write).
        // Without a pivot QEMU 7.2 leaves a base it reopened read-write so (recorded: snapshot-then-commit.test.ts).
        if (base.readOnly !== top.readOnly) await setReadOnly(base, top.readOnly).catch(() => undefined);
        graph.replace(top, base);
      }
      await graph.dropFilter(filter);
    } finally {
      this.convergence.drained?.end();
    }
  }
}
