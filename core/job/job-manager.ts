/**
 * The jobs of a layer, newest first (as QEMU lists them): creation with
 * QEMU's id rules, lookup with the error each command family uses, the
 * status events, and cancelling everything on quit.
 */
import { inject, injectable } from 'inversify';
import type { BlockGraph } from '../block/block-graph.js';
import type { BlockNode } from '../block/block-node.js';
import { DrainSection } from '../block/drain-section.js';
import { isWellFormedId } from '../block/node-names.js';
import { BlockLayerError } from '../errors.js';
import type { BlockLayerHooks } from '../hooks/block-layer-hooks.js';
import type { EventPublisher } from '../hooks/event-publisher.js';
import type { Lifecycle } from '../lifecycle.js';
import { TOKENS } from '../tokens.js';
import { Job, type JobHost, type JobOptions } from './job.js';
import type { JobStatus } from './job-handle.js';
import { verbAllowed } from './job-states.js';
import type { JobTypeRegistry } from './job-type-registry.js';
import { JobTxn } from './job-txn.js';

export type JobCreateOptions = Omit<JobOptions, 'txn'> & { txn?: JobTxn | undefined };

@injectable()
export class JobManager {
  private readonly jobs: Job[] = [];
  private readonly host: JobHost;
  /** Cancel commands waiting on a job, woken when it goes pending to wait for job-finalize (a soft-cancelled mirror). */
  private readonly awaitingFinalize = new Map<Job, () => void>();

  constructor(
    @inject(TOKENS.EventPublisher) private readonly events: EventPublisher,
    @inject(TOKENS.BlockLayerHooks) private readonly hooks: BlockLayerHooks,
    @inject(TOKENS.JobTypeRegistry) private readonly types: JobTypeRegistry,
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.Lifecycle) lifecycle: Lifecycle,
  ) {
    this.host = {
      statusChanged: (job: Job, previous: JobStatus) => {
        this.events.publish('JOB_STATUS_CHANGE', { status: job.status, id: job.id });
        this.hooks.jobStatusChanged.call(job, previous);
        if (job.status === 'pending' && !job.autoFinalize) this.awaitingFinalize.get(job)?.();
      },
      publish: (event, data) => this.events.publish(event, data),
      dismissed: (job) => this.jobs.splice(this.jobs.indexOf(job), 1),
      released: (node) => this.graph.closeIfLeft(node),
    };
    lifecycle.hooks.beforeShutdown.tapPromise('JobManager', () => this.cancelAll());
    hooks.backendDetached.tap('JobManager', (_name, node) => this.cancelJobsUsing(node));
  }

  /**
   * A device went away (QEMU's blockdev_mark_auto_del): every block job
   * holding its node is cancelled, as block-job-cancel does (a ready mirror
   * or active commit finishes without switching); not waited for.
   */
  private cancelJobsUsing(node: BlockNode): void {
    for (const job of [...this.jobs]) {
      if (!job.isBlockJob || !job.heldEdges.some((edge) => edge.node === node)) continue;
      if (!verbAllowed('cancel', job.status)) continue;
      void this.cancel(job, false).catch(() => undefined);
    }
  }

  /** A group for jobs that must conclude together (a grouped transaction). */
  createTxn(): JobTxn {
    return new JobTxn();
  }

  /** QEMU's job id rules: well-formed, and not used by any job, concluded ones included. */
  checkId(id: string): void {
    if (!isWellFormedId(id)) throw new BlockLayerError(`Invalid job ID '${id}'`);
    if (this.find(id) !== undefined) throw new BlockLayerError(`Job ID '${id}' already in use`);
  }

  /** Creates a job in status `created`. */
  create(options: JobCreateOptions): Job {
    this.checkId(options.id);
    const type = this.types.get(options.type);
    if (type === undefined) throw new BlockLayerError(`No plugin provides job type '${options.type}'`);
    const txn = options.txn ?? this.createTxn();
    const job = new Job({ ...options, txn, blockJob: type.blockJob ?? true }, this.host);
    txn.add(job);
    this.jobs.unshift(job);
    this.hooks.jobCreated.call(job);
    job.transition('created');
    return job;
  }

  list(): readonly Job[] {
    return this.jobs;
  }

  find(id: string): Job | undefined {
    return this.jobs.find((j) => j.id === id);
  }

  /** For job-* commands: QEMU's "Job not found". */
  require(id: string): Job {
    const job = this.find(id);
    if (job === undefined) throw new BlockLayerError('Job not found');
    return job;
  }

  /** For block-job-* commands, whose `device` is the job id: DeviceNotActive (also for a job that is no block job). */
  requireBlockJob(id: string): Job {
    const job = this.find(id);
    if (job === undefined || !job.isBlockJob) throw new BlockLayerError(`Block job '${id}' not found`, 'DeviceNotActive');
    return job;
  }

  /**
   * Cancels a job and resolves once it has concluded, or once it waits for
   * job-finalize (a soft-cancelled ready mirror completes instead, and may
   * need finalising).
   */
  async cancel(job: Job, force: boolean): Promise<void> {
    job.checkCancel();
    const concluded = job.txn.whenConcluded(job);
    // Finalisation has begun (it is atomic in QEMU): the job concludes as it stands.
    if (job.txn.isFinalizing) return concluded;
    const pending = new Promise<void>((resolve) => this.awaitingFinalize.set(job, resolve));
    try {
      job.requestCancel(force);
      if (!job.hasStarted) await job.txn.jobCompleted(job);
      else if (job.isCancelled && ['waiting', 'pending'].includes(job.status)) await job.txn.cancelFinished(job);
      await Promise.race([concluded, pending]);
    } finally {
      this.awaitingFinalize.delete(job);
    }
  }

  /** job-finalize: finalises the job's whole group; resolves once done. */
  async finalize(job: Job): Promise<void> {
    job.checkFinalize();
    await job.txn.finalize();
  }

  /**
   * On quit, as qemu-storage-daemon: drain every node (jobs pause), then
   * cancel every job that can be and wait for each to conclude (iotest 185).
   */
  private async cancelAll(): Promise<void> {
    const cancellable: JobStatus[] = ['created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending'];
    const section = new DrainSection();
    for (const node of this.graph.list()) section.addNode(node);
    await section.settle();
    try {
      for (const job of [...this.jobs]) {
        if (cancellable.includes(job.status)) await this.cancel(job, true);
      }
    } finally {
      section.end();
    }
  }
}
