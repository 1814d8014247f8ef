/**
 * Starting a stream once its arguments are resolved (QEMU 7.2's
 * stream_start): the base's overlay and the node right above the base,
 * the device reopened read-write if it is read-only, then — with the device drained — the copy-on-read
 * filter above it (its users now do their I/O through the filter), the job
 * (status `created`), and what the job holds: the filter as its main node
 * (through a BlockBackend of its own in QEMU, so blockdev-del of the filter
 * says "Node x is in use"), and every node from the device down to the
 * base, which other jobs and blockdev-del then find busy. The job starts
 * once the drain ends. Anything that fails on the way is undone (a job that
 * existed goes `null`, as QEMU's job_early_fail).
 */
import { inject, injectable } from 'inversify';
import { cowChild, filteredChild, findOverlay, nextInChain } from '../../core/block/backing-chain.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { NodeEdge, NodeParent } from '../../core/block/node-edge.js';
import { setReadOnly } from '../../core/block/node-reopen.js';
import { BlockLayerError } from '../../core/errors.js';
import type { Job } from '../../core/job/job.js';
import type { JobManager } from '../../core/job/job-manager.js';
import { TOKENS } from '../../core/tokens.js';
import { type CopyOnReadState, copyOnReadDriver } from './copy-on-read.js';
import type { BlockStreamArgs } from './options.js';
import type { StreamPlan } from './stream-checks.js';
import { StreamJob } from './stream-job.js';

/** Filters a job inserts that must stay removable (QEMU's never_freeze): a chain through one cannot be frozen. */
const NEVER_FREEZE = new Set(['commit_top', 'mirror_top']);

/** bdrv_freeze_backing_chain(top, aboveBase): no link on the way may lead to a filter that must stay removable. */
function checkFreezable(top: BlockNode, aboveBase: BlockNode): void {
  for (let node = top; node !== aboveBase; ) {
    const below = nextInChain(node)!;
    if (NEVER_FREEZE.has(below.driver.name)) {
      const role = [...node.children.values()].find((edge) => edge.node === below)?.role ?? 'backing';
      throw new BlockLayerError(`Cannot freeze '${role}' link to '${below.nodeName}'`);
    }
    node = below;
  }
}

@injectable()
export class StreamStarter {
  constructor(
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.JobManager) private readonly jobs: JobManager,
  ) {}

  async start(args: BlockStreamArgs, plan: StreamPlan): Promise<void> {
    const { top, base, bottom } = plan;
    let baseOverlay: BlockNode;
    let aboveBase: BlockNode;
    if (bottom !== undefined) {
      baseOverlay = aboveBase = bottom;
    } else {
      const overlay = findOverlay(top, base);
      if (overlay === undefined) throw new BlockLayerError(`'${base!.nodeName}' is not in the backing chain of '${top.nodeName}'`);
      baseOverlay = aboveBase = overlay;
      if (cowChild(aboveBase) !== base) {
        aboveBase = cowChild(aboveBase)!;
        while (filteredChild(aboveBase) !== base) aboveBase = filteredChild(aboveBase)!;
      }
    }
    checkFreezable(top, aboveBase);
    // QEMU's stream_start reopens a read-only device read-write before anything else exists (back in the job's clean).
    const topReadOnly = top.readOnly;
    await setReadOnly(top, false);
    let job: Job | undefined;
    try {
      await top.drained(async () => {
        job = await this.createJob(args, top, baseOverlay, aboveBase, topReadOnly);
      });
    } catch (error) {
      if (topReadOnly) await setReadOnly(top, true).catch(() => undefined);
      throw error;
    }
    job!.start();
  }

  /** Inside the device's drained section: the filter, the job and what it holds; undone if anything fails. */
  private async createJob(args: BlockStreamArgs, top: BlockNode, baseOverlay: BlockNode, aboveBase: BlockNode, topReadOnly: boolean): Promise<Job> {
    const filter = await this.graph.openFilter(copyOnReadDriver, top, args['filter-node-name']).catch((error: unknown) => {
      throw new BlockLayerError(`Could not create node: ${(error as Error).message}`);
    });
    this.graph.replace(top, filter);
    let job: Job | undefined;
    try {
      let driver!: StreamJob;
      const speed = args.speed ?? 0;
      job = this.jobs.create({
        // The device the node was attached to is now on the filter (QEMU names the job after the filter's device).
        id: args['job-id'] ?? this.graph.deviceName(filter),
        type: 'stream',
        autoFinalize: args['auto-finalize'] ?? true,
        autoDismiss: args['auto-dismiss'] ?? true,
        speed: Math.max(0, speed),
        driver: () => (driver = new StreamJob()),
      });
      if (speed < 0) throw new BlockLayerError("Parameter 'speed' expects a non-negative value");
      job.hold(this.graph.attach(job, filter, 'main node'));
      // QEMU's job reads and writes through a BlockBackend on the filter.
      const backend: NodeParent = { parentName: '', parentKind: 'backend' };
      job.hold(this.graph.attach(backend, filter, 'root'));
      const base = nextInChain(aboveBase);
      let topEdge: NodeEdge | undefined;
      for (let node: BlockNode | undefined = top; node !== undefined && node !== base; node = nextInChain(node)) {
        const edge = this.graph.attach(job, node, 'intermediate node');
        job.hold(edge);
        topEdge ??= edge;
      }
      driver.init({
        graph: this.graph,
        top,
        topEdge: topEdge!,
        filter,
        gate: (filter.driverState as CopyOnReadState).gate,
        baseOverlay,
        aboveBase,
        backingFile: args['backing-file'],
        onError: args['on-error'] ?? 'report',
        topReadOnly,
      });
      return job;
    } catch (error) {
      if (job !== undefined) {
        job.releaseNodes();
        job.dismiss();
      }
      await this.graph.dropFilter(filter);
      throw error;
    }
  }
}
