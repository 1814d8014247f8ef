/**
 * A job: QEMU's state machine (job-states.ts) around a JobDriver. It owns
 * the status and its events, progress, speed, pausing (by the user, by
 * drained nodes, by a `stop` error policy), cancellation, and the user
 * verbs with QEMU's checks and messages. How a finished job concludes with
 * the others of its group is job-txn.ts; the timer its sleeps wait on is
 * wakeable-sleep.ts.
 */
import { BlockLayerError } from '../errors.js';
import type { BlockNode } from '../block/block-node.js';
import type { NodeEdge, NodeParent } from '../block/node-edge.js';
import { refreshPermissionsAfter } from '../block/permissions.js';
import { deferred, type Deferred } from '../util/deferred.js';
import type { JobDriver } from './job-driver.js';
import type { JobHandle, JobStatus, JobType } from './job-handle.js';
import { type JobVerb, RUN_OVER, transitionAllowed, verbAllowed } from './job-states.js';
import type { JobTxn } from './job-txn.js';
import { RateLimiter } from './rate-limiter.js';
import { WakeableSleep } from './wakeable-sleep.js';

/** Thrown from `pausePoint`/`sleep` once the job is cancelled, to unwind `run`. */
export class JobCancelled extends Error {
  constructor() {
    super('Operation canceled');
    this.name = 'JobCancelled';
  }
}

export type IoStatus = 'ok' | 'failed' | 'nospace';

/** What a job needs from its manager. */
export interface JobHost {
  statusChanged(job: Job, previous: JobStatus): void;
  publish(event: string, data: Record<string, unknown>): void;
  dismissed(job: Job): void;
  /** The job has ended and let go of `node`: a node only its users held closes if none is left (BlockGraph.closeIfLeft). */
  released(node: BlockNode): Promise<void>;
}

export interface JobOptions {
  id: string;
  type: JobType;
  /** Makes the job's driver, once the job exists (the driver may attach the job to nodes). */
  driver: (job: Job) => JobDriver;
  txn: JobTxn;
  autoFinalize?: boolean;
  autoDismiss?: boolean;
  /** Bytes per second, 0 = unlimited. */
  speed?: number;
  /** A block job (default), or a plain job without BLOCK_JOB_* events (JobTypeContribution.blockJob). */
  blockJob?: boolean;
}

export class Job implements JobHandle, NodeParent {
  readonly parentKind = 'job';
  readonly id: string;
  readonly type: JobType;
  readonly driver: JobDriver;
  readonly txn: JobTxn;
  readonly autoFinalize: boolean;
  readonly autoDismiss: boolean;
  /** QEMU's BlockJob: announced with BLOCK_JOB_* events, listed by query-block-jobs. */
  readonly isBlockJob: boolean;
  readonly limiter = new RateLimiter();

  /** Progress in bytes: done so far, and to do in total (which may move both ways). */
  currentProgress = 0;
  totalProgress = 0;
  ioStatus: IoStatus = 'ok';
  /** Set once the job failed or was cancelled: what query-jobs reports as `error`. */
  error: string | undefined;

  private currentStatus: JobStatus = 'undefined';
  private currentSpeed = 0;
  private pauseCount = 0;
  private pausedByUser = false;
  private cancelRequested = false;
  private forceCancel = false;
  private started = false;
  private working = false;
  private parked: Deferred | undefined;
  private resumed: Deferred | undefined;
  private readonly sleeper = new WakeableSleep();
  private runEnded = deferred();
  private readonly edges: NodeEdge[] = [];
  /** Every node the job held, for `closeReleased` once it has ended. */
  private readonly heldNodes = new Set<BlockNode>();

  constructor(
    options: JobOptions,
    private readonly host: JobHost,
  ) {
    this.id = options.id;
    this.type = options.type;
    this.txn = options.txn;
    this.autoFinalize = options.autoFinalize ?? true;
    this.autoDismiss = options.autoDismiss ?? true;
    this.isBlockJob = options.blockJob ?? true;
    this.setSpeedValue(options.speed ?? 0);
    this.driver = options.driver(this);
  }

  get parentName(): string {
    return this.id;
  }

  /** Why a node this job holds cannot be deleted. */
  get blocker(): string {
    return `block device is in use by block job: ${this.type}`;
  }

  get status(): JobStatus {
    return this.currentStatus;
  }

  get speed(): number {
    return this.currentSpeed;
  }

  /**
   * Cancelled for good (QEMU's job_is_cancelled): the job stops and ends
   * CANCELLED. A soft cancel the driver accepted (a ready mirror) is only
   * requested: the job finishes its work and ends COMPLETED.
   */
  get isCancelled(): boolean {
    return this.cancelRequested && this.forceCancel;
  }

  /** Any cancel was asked for, soft ones included (QEMU's job_cancel_requested). */
  get isCancelRequested(): boolean {
    return this.cancelRequested;
  }

  /** The pause counter is above zero (query-block-jobs `paused`). */
  get paused(): boolean {
    return this.pauseCount > 0;
  }

  /** Doing work right now, not sleeping or parked (query-block-jobs `busy`). */
  get busy(): boolean {
    return this.working;
  }

  get hasStarted(): boolean {
    return this.started;
  }

  /** Resolves when `run` has returned or thrown. */
  get whenRunEnded(): Promise<void> {
    return this.runEnded.promise;
  }

  /** Status changes go through here: checked against the table, announced unless unchanged. */
  transition(to: JobStatus): void {
    const from = this.currentStatus;
    if (!transitionAllowed(from, to)) throw new Error(`job '${this.id}': illegal transition ${from} -> ${to}`);
    if (from === to) return;
    this.currentStatus = to;
    this.host.statusChanged(this, from);
  }

  /** Holds `node` for the job's lifetime (released at clean); drains of the node pause the job. */
  hold(edge: NodeEdge): void {
    this.edges.push(edge);
    this.heldNodes.add(edge.node);
  }

  get heldEdges(): readonly NodeEdge[] {
    return this.edges;
  }

  /** Moves created → running and starts the driver. */
  start(): void {
    this.started = true;
    this.transition('running');
    void this.runDriver();
  }

  /** Called by the driver between units of work. Parks while paused; throws once cancelled. */
  async pausePoint(): Promise<void> {
    if (this.isCancelled) throw new JobCancelled();
    if (this.pauseCount > 0) {
      if (this.currentStatus !== 'paused' && this.currentStatus !== 'standby') {
        this.transition(this.currentStatus === 'ready' ? 'standby' : 'paused');
      }
      this.working = false;
      this.parked?.resolve();
      this.parked = undefined;
      while (this.pauseCount > 0 && !this.isCancelled) {
        this.resumed ??= deferred();
        await this.resumed.promise;
      }
      // Usually done by releasePause already; a cancelled job leaves its pause here.
      if (this.currentStatus === 'paused') this.transition('running');
      else if (this.currentStatus === 'standby') this.transition('ready');
      this.working = true;
    }
    if (this.isCancelled) throw new JobCancelled();
  }

  /**
   * Sleeps (rate limiting; Infinity: until something happens), woken early
   * by pause, cancel or a new speed; then a pause point.
   */
  async sleep(ns: number): Promise<void> {
    await this.nap(ns);
    await this.pausePoint();
  }

  /**
   * Sleeps like `sleep` but without the pause point, for a driver that must
   * finish work in flight before it parks (so progress stands still while
   * paused): it checks `paused`/`isCancelled` itself afterwards.
   */
  async nap(ns: number): Promise<void> {
    if (ns > 0 && !this.isCancelled && this.pauseCount === 0) {
      this.working = false;
      await this.sleeper.sleep(ns);
      this.working = true;
    }
  }

  /** Ends a `sleep` or `nap` early: the driver has work again (mirror: new dirty data, job-complete). */
  wake(): void {
    this.sleeper.wake();
  }

  /** The job can be completed by the user now (mirror): running → ready, with BLOCK_JOB_READY. */
  markReady(): void {
    this.transition('ready');
    this.publish('BLOCK_JOB_READY', this.eventData());
  }

  /** Marks work as done; progress never goes backwards. */
  progress(bytes: number): void {
    this.currentProgress += bytes;
  }

  /**
   * Asks the job to pause (user verb, drain, `stop` policy). Resolves once it
   * is parked, or at once if it is busy doing I/O (it parks at its next
   * pause point) or not running.
   */
  async requestPause(byUser: boolean): Promise<void> {
    this.pauseCount++;
    if (byUser) this.pausedByUser = true;
    if (this.sleeper.active) {
      this.parked ??= deferred();
      const parked = this.parked.promise;
      this.sleeper.wake();
      await parked;
    }
  }

  /** Undoes one pause; the job runs again when none is left. */
  releasePause(byUser: boolean): void {
    if (byUser) {
      this.pausedByUser = false;
      this.ioStatus = 'ok';
    }
    if (this.pauseCount === 0) return;
    if (--this.pauseCount > 0) return;
    // The job is parked: announce the resumption now, as QEMU re-enters it at once.
    if (this.currentStatus === 'paused') this.transition('running');
    else if (this.currentStatus === 'standby') this.transition('ready');
    this.wakeParked();
  }

  private wakeParked(): void {
    this.resumed?.resolve();
    this.resumed = undefined;
  }

  /**
   * Resolves when the job is not doing work (parked, sleeping, or not
   * running): drain waits for this. A job woken to pause is not quiescent
   * until it has parked.
   */
  async quiescent(): Promise<void> {
    if (!this.started || (!this.working && this.parked === undefined)) return;
    this.parked ??= deferred();
    await Promise.race([this.parked.promise, this.runEnded.promise]);
  }

  // --- drained nodes pause the job (NodeParent) ---------------------------------------------

  drainedBegin(): void {
    void this.requestPause(false);
  }

  drainedPoll(): Promise<void> {
    return this.quiescent();
  }

  drainedEnd(): void {
    this.releasePause(false);
  }

  /** The `stop` error policy: pause as if the user had, with the io-status set. */
  async stopOnError(status: Exclude<IoStatus, 'ok'>): Promise<void> {
    this.ioStatus = status;
    this.pauseCount++;
    this.pausedByUser = true;
    await this.pausePoint();
  }

  // --- user verbs (QMP job-* / block-job-*) -------------------------------------------------

  private checkVerb(verb: JobVerb): void {
    if (!verbAllowed(verb, this.currentStatus)) {
      throw new BlockLayerError(`Job '${this.id}' in state '${this.currentStatus}' cannot accept command verb '${verb}'`);
    }
  }

  get isUserPaused(): boolean {
    return this.pausedByUser;
  }

  async userPause(): Promise<void> {
    this.checkVerb('pause');
    if (this.pausedByUser) throw new BlockLayerError('Job is already paused');
    await this.requestPause(true);
  }

  userResume(): void {
    if (!this.pausedByUser) throw new BlockLayerError("Can't resume a job that was not paused");
    this.checkVerb('resume');
    this.releasePause(true);
  }

  userSetSpeed(speed: number): void {
    this.checkVerb('set-speed');
    if (speed < 0) throw new BlockLayerError("Parameter 'speed' expects a non-negative value");
    this.setSpeedValue(speed);
    this.sleeper.wake();
  }

  userComplete(): void {
    this.checkVerb('complete');
    if (this.cancelRequested || this.driver.complete === undefined) {
      throw new BlockLayerError(`The active block job '${this.id}' cannot be completed`);
    }
    this.driver.complete(this);
  }

  /** Verb check only; the group's finalisation is job-txn's. */
  checkFinalize(): void {
    this.checkVerb('finalize');
  }

  /** Removes a concluded job. */
  userDismiss(): void {
    this.checkVerb('dismiss');
    this.dismiss();
  }

  checkCancel(): void {
    this.checkVerb('cancel');
  }

  /**
   * Requests cancellation: a user-paused job is resumed first (as QEMU does,
   * so it can stop), then woken so its next pause point throws JobCancelled.
   * The driver's `cancel` says whether the cancel is forced (a driver
   * without one is always force-cancelled); a soft cancel is ignored once
   * the run is over (QEMU's job_cancel_async).
   */
  requestCancel(force: boolean): void {
    if (this.pausedByUser) this.releasePause(true);
    if (this.isCancelled) return;
    const forced = this.driver.cancel?.(this, force) ?? true;
    if (!forced && RUN_OVER.includes(this.currentStatus)) return;
    this.cancelRequested = true;
    this.forceCancel ||= forced;
    this.sleeper.wake();
    this.wakeParked();
  }

  dismiss(): void {
    this.transition('null');
    this.host.dismissed(this);
  }

  /** Announces an event about this job (BLOCK_JOB_* events). */
  publish(event: string, data: Record<string, unknown>): void {
    this.host.publish(event, data);
  }

  /** The members BLOCK_JOB_COMPLETED, _CANCELLED and _READY share. */
  eventData(): Record<string, unknown> {
    return { type: this.type, device: this.id, len: this.totalProgress, offset: this.currentProgress, speed: this.currentSpeed };
  }

  /** Releases the nodes the job held. */
  releaseNodes(): void {
    for (const edge of this.edges.splice(0)) {
      edge.node.parents.delete(edge);
      refreshPermissionsAfter(edge.node);
    }
  }

  /** After clean: the nodes the job held that only their users held, and that it was the last user of, close. */
  async closeReleased(): Promise<void> {
    for (const node of this.heldNodes) await this.host.released(node);
    this.heldNodes.clear();
  }

  private setSpeedValue(speed: number): void {
    this.currentSpeed = speed;
    this.limiter.setSpeed(speed);
  }

  private async runDriver(): Promise<void> {
    this.working = true;
    try {
      await this.pausePoint();
      await this.driver.run(this);
    } catch (error) {
      if (!(error instanceof JobCancelled) || !this.isCancelled) {
        this.error ??= error instanceof Error ? error.message : String(error);
      }
    } finally {
      // A driver that returns with a pause still pending leaves it here.
      if (this.currentStatus === 'paused') this.transition('running');
      else if (this.currentStatus === 'standby') this.transition('ready');
      this.working = false;
      this.parked?.resolve();
      this.runEnded.resolve();
    }
    await this.txn.jobCompleted(this);
  }
}
