/**
 * Starting a commit once its arguments are resolved, with `top` drained
 * (QEMU 7.2's commit_start and commit_active_start / mirror_start_job, each
 * in its order):
 *
 * - intermediate: the job (status `created`; it is named after the device),
 *   the base reopened read-write if it is read-only (back read-only when
 *   the job is cleaned up), the commit_top filter above `top` (the image above
 *   `top` reads through it), then what the job holds: the device as its
 *   main node, every node from `top` down to the base (busy for other jobs
 *   and blockdev-del) and, through BlockBackends of its own in QEMU, `top`
 *   and the base ("Node x is in use").
 * - active: the base reopened read-write if it is read-only (before the
 *   job exists, so a refusal shows no job events), the mirror_top filter above `top` (the
 *   device's users do their I/O through it), the job, then what it holds:
 *   the filter, `top`, the nodes down to the base and the base (through a
 *   BlockBackend), the dirty bitmap and the copy engine.
 *
 * The job starts once the drain ends. Anything that fails on the way is
 * undone (a job that existed goes `null`, as QEMU's job_early_fail).
 */
import { inject, injectable } from 'inversify';
import { findOverlay, nextInChain } from '../../core/block/backing-chain.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { NodeEdge, NodeParent } from '../../core/block/node-edge.js';
import { reopenRefusal, setReadOnly } from '../../core/block/node-reopen.js';
import { ClusterBitmap } from '../../core/bitmap/cluster-bitmap.js';
import { BlockCopy } from '../../core/copy/block-copy.js';
import { BlockLayerError } from '../../core/errors.js';
import type { Job } from '../../core/job/job.js';
import type { JobManager } from '../../core/job/job-manager.js';
import { TOKENS } from '../../core/tokens.js';
import { ActiveCommitJob } from './active-commit-job.js';
import type { CommitPlan } from './commit-checks.js';
import { activeCommitTopDriver, commitTopDriver } from './commit-filters.js';
import { CommitJob } from './commit-job.js';
import type { BlockCommitArgs } from './options.js';

const KiB = 1024;
/** Largest copy of an active commit (QEMU's mirror: 1 MiB requests). */
const MAX_COPY = 1024 * KiB;

/** bdrv_get_default_bitmap_granularity: the base's cluster size within [4 KiB, 64 KiB], 64 KiB if it has none. */
function defaultGranularity(node: BlockNode): number {
  const cluster = node.limits.clusterSize;
  return cluster > 0 ? Math.min(64 * KiB, Math.max(4 * KiB, cluster)) : 64 * KiB;
}

function checkSpeed(speed: number): void {
  if (speed < 0) throw new BlockLayerError("Parameter 'speed' expects a non-negative value");
}

/** Undoes the reopen of a read-only base after a failed start (QEMU ignores a failure there, keeping the first error). */
async function restoreReadOnly(base: BlockNode, wasReadOnly: boolean): Promise<void> {
  if (wasReadOnly) await setReadOnly(base, true).catch(() => undefined);
}

@injectable()
export class CommitStarter {
  constructor(
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.JobManager) private readonly jobs: JobManager,
  ) {}

  async start(args: BlockCommitArgs, plan: CommitPlan): Promise<void> {
    const id = args['job-id'] ?? this.graph.deviceName(plan.device);
    let job: Job | undefined;
    await plan.top.drained(async () => {
      job = plan.active ? await this.startActive(args, plan, id) : await this.startIntermediate(args, plan, id);
    });
    job!.start();
  }

  private createJob(args: BlockCommitArgs, id: string, driver: () => CommitJob | ActiveCommitJob): Job {
    return this.jobs.create({
      id,
      type: 'commit',
      autoFinalize: args['auto-finalize'] ?? true,
      autoDismiss: args['auto-dismiss'] ?? true,
      speed: Math.max(0, args.speed ?? 0),
      driver,
    });
  }

  /** A BlockBackend of the job's own on `node` (QEMU's s->base, s->top, s->target): blockdev-del says "Node x is in use". */
  private holdBackend(job: Job, node: BlockNode): void {
    const backend: NodeParent = { parentName: '', parentKind: 'backend' };
    job.hold(this.graph.attach(backend, node, 'root'));
  }

  /** The job's edges to the nodes from `from` down to the base (exclusive); the first one. */
  private holdChain(job: Job, from: BlockNode | undefined, base: BlockNode): NodeEdge | undefined {
    let first: NodeEdge | undefined;
    for (let node = from; node !== undefined && node !== base; node = nextInChain(node)) {
      const edge = this.graph.attach(job, node, 'intermediate node');
      job.hold(edge);
      first ??= edge;
    }
    return first;
  }

  private async startIntermediate(args: BlockCommitArgs, plan: CommitPlan, id: string): Promise<Job> {
    const { device, top, base } = plan;
    let driver!: CommitJob;
    const job = this.createJob(args, id, () => (driver = new CommitJob()));
    let filter: BlockNode | undefined;
    const baseReadOnly = base.readOnly;
    try {
      checkSpeed(args.speed ?? 0);
      await setReadOnly(base, false);
      // The image above `top` records the base at the end, reopened read-write for it then (QEMU's
      // bdrv_child_cb_update_filename). Refused only then, QEMU 7.2 fails the job after the copy (and its
      // daemon aborts): refuse it now.
      const refusal = reopenRefusal(plan.overlay!, false);
      if (refusal !== undefined) throw refusal;
      filter = await this.graph.openFilter(commitTopDriver, top, args['filter-node-name']);
      this.graph.replace(top, filter);
      job.hold(this.graph.attach(job, device, 'main node'));
      const topEdge = this.holdChain(job, top, base)!;
      const baseEdge = this.graph.attach(job, base, 'base');
      job.hold(baseEdge);
      this.holdBackend(job, base);
      this.holdBackend(job, top);
      driver.init({
        graph: this.graph,
        top,
        topEdge,
        base,
        baseEdge,
        baseOverlay: findOverlay(top, base)!,
        filter,
        backingFile: args['backing-file'],
        onError: args['on-error'] ?? 'report',
        baseReadOnly,
      });
      return job;
    } catch (error) {
      job.releaseNodes();
      job.dismiss();
      if (filter !== undefined) await this.graph.dropFilter(filter);
      await restoreReadOnly(base, baseReadOnly);
      throw error;
    }
  }

  private async startActive(args: BlockCommitArgs, plan: CommitPlan, id: string): Promise<Job> {
    const { top, base } = plan;
    const baseReadOnly = base.readOnly;
    await setReadOnly(base, false);
    let filter: BlockNode;
    try {
      filter = await this.graph.openFilter(activeCommitTopDriver, top, args['filter-node-name']);
    } catch (error) {
      await restoreReadOnly(base, baseReadOnly);
      throw error;
    }
    this.graph.replace(top, filter);
    let job: Job | undefined;
    try {
      let driver!: ActiveCommitJob;
      job = this.createJob(args, id, () => (driver = new ActiveCommitJob()));
      checkSpeed(args.speed ?? 0);
      job.hold(this.graph.attach(job, filter, 'main node'));
      job.hold(this.graph.attach(job, top, 'source'));
      this.holdChain(job, nextInChain(top), base);
      const baseEdge = this.graph.attach(job, base, 'target');
      job.hold(baseEdge);
      this.holdBackend(job, base);
      const granularity = defaultGranularity(base);
      const activeJob = job;
      const copy = new BlockCopy({
        source: filter.children.get('file')!,
        target: baseEdge,
        bitmap: new ClusterBitmap(granularity, top.length),
        maxChunk: Math.max(granularity, Math.floor(MAX_COPY / granularity) * granularity),
        onProgress: (bytes) => activeJob.progress(bytes),
      });
      driver.init(job, {
        graph: this.graph,
        top,
        filter,
        base,
        baseOverlay: findOverlay(top, base)!,
        baseEdge,
        copy,
        onError: args['on-error'] ?? 'report',
      });
      return job;
    } catch (error) {
      if (job !== undefined) {
        job.releaseNodes();
        job.dismiss();
      }
      await this.graph.dropFilter(filter);
      await restoreReadOnly(base, baseReadOnly);
      throw error;
    }
  }
}
