/**
 * Starting a mirror once the source and target nodes are known, shared by
 * blockdev-mirror and drive-mirror (QEMU's blockdev_mirror_common,
 * mirror_start and mirror_start_job): QEMU's checks in QEMU's order, then,
 * with the source drained, the mirror_top filter above the source (its
 * users now do their I/O through it), the job (status `created`), its
 * hold on the filter, the source and the target, the dirty bitmap and the
 * write interception; the job starts once the drain ends. Anything that
 * fails on the way is undone (a job that existed goes `null`, as QEMU's
 * job_early_fail).
 */
import { inject, injectable } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { NodeParent } from '../../core/block/node-edge.js';
import { ClusterBitmap } from '../../core/bitmap/cluster-bitmap.js';
import { BlockCopy } from '../../core/copy/block-copy.js';
import { BlockLayerError } from '../../core/errors.js';
import type { Job } from '../../core/job/job.js';
import type { JobManager } from '../../core/job/job-manager.js';
import { TOKENS } from '../../core/tokens.js';
import {
  backingOf,
  checkGranularity,
  checkNotSelf,
  checkReplaces,
  checkSyncMode,
  checkTargetOutsideChain,
  type MirrorGeometry,
  mirrorGeometry,
} from './mirror-checks.js';
import { namesUnopenedBacking } from './mirror-cow.js';
import { MirrorJob } from './mirror-job.js';
import { MirrorPivot } from './mirror-pivot.js';
import { MirrorState } from './mirror-state.js';
import { mirrorTopDriver } from './mirror-top.js';
import { MirrorWrites } from './mirror-writes.js';
import type { MirrorArgs } from './options.js';

export interface MirrorStartRequest {
  args: MirrorArgs;
  source: BlockNode;
  target: BlockNode;
  /** The target must read as zeroes where the source is unallocated (QEMU's zero_target). */
  zeroTarget: boolean;
  /** Closes a target the command opened itself (drive-mirror): when the job ends, or at once if it does not start. */
  releaseTarget?: () => Promise<void>;
  /** Gives the target its backing node when the job did not fail (drive-mirror's; blockdev-mirror leaves it). */
  linkTargetBacking?: () => Promise<void>;
}

@injectable()
export class MirrorStarter {
  constructor(
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.JobManager) private readonly jobs: JobManager,
  ) {}

  async start(request: MirrorStartRequest): Promise<void> {
    const { args, source, target } = request;
    const release = request.releaseTarget ?? (async () => undefined);
    let job: Job | undefined;
    try {
      checkGranularity(args.granularity);
      this.graph.checkNotBusy(source);
      this.graph.checkNotBusy(target);
      const sync = args.sync === 'top' && backingOf(source) === undefined ? 'full' : args.sync;
      if (args.replaces !== undefined) checkReplaces(this.graph, source, args.replaces);
      checkSyncMode(sync);
      const geometry = mirrorGeometry(args, target);
      checkNotSelf(source, target);
      const backingLater = await namesUnopenedBacking(target);
      await source.drained(async () => {
        job = await this.createJob(request, sync as 'full' | 'top' | 'none', geometry, release, backingLater);
      });
    } catch (error) {
      await release();
      throw error;
    }
    job!.start();
  }

  /** Inside the source's drained section: the filter, the job and what it holds; undone if anything fails. */
  private async createJob(
    request: MirrorStartRequest,
    sync: 'full' | 'top' | 'none',
    geometry: MirrorGeometry,
    releaseTarget: () => Promise<void>,
    backingLater: boolean,
  ): Promise<Job> {
    const { args, source, target } = request;
    const filter = await this.graph.openFilter(mirrorTopDriver, source, args['filter-node-name']);
    // The target's own edges stay on the source (a blockdev-mirror target may be backed by it).
    this.graph.replace(source, filter, (edge) => edge.parent === target);
    let job: Job | undefined;
    let undo: (() => void) | undefined;
    try {
      let driver!: MirrorJob;
      const speed = args.speed ?? 0;
      job = this.jobs.create({
        // The device the source was attached to is now on the filter (QEMU names the job after mirror_top's device).
        id: args['job-id'] ?? this.graph.deviceName(filter),
        type: 'mirror',
        autoFinalize: args['auto-finalize'] ?? true,
        autoDismiss: args['auto-dismiss'] ?? true,
        speed: Math.max(0, speed),
        driver: () => (driver = new MirrorJob()),
      });
      if (speed < 0) throw new BlockLayerError("Parameter 'speed' expects a non-negative value");
      checkTargetOutsideChain(source, target);
      undo = this.setUp(job, driver, request, filter, sync, geometry, { releaseTarget, backingLater });
      return job;
    } catch (error) {
      undo?.();
      if (job !== undefined) {
        job.releaseNodes();
        job.dismiss();
      }
      await this.graph.dropFilter(filter);
      throw error;
    }
  }

  /** The job's edges, the dirty bitmap and copy engine, the interception; returns how to take the interception out. */
  private setUp(
    job: Job,
    driver: MirrorJob,
    request: MirrorStartRequest,
    filter: BlockNode,
    sync: 'full' | 'top' | 'none',
    geometry: MirrorGeometry,
    ending: { releaseTarget: () => Promise<void>; backingLater: boolean },
  ): () => void {
    const { args, source, target } = request;
    job.hold(this.graph.attach(job, filter, 'main node'));
    job.hold(this.graph.attach(job, source, 'source'));
    const targetChild = this.graph.attach(job, target, 'target');
    job.hold(targetChild);
    // QEMU's job writes the target through a BlockBackend of its own: blockdev-del of the target says "Node … is in use".
    const targetBackend: NodeParent = { parentName: '', parentKind: 'backend' };
    job.hold(this.graph.attach(targetBackend, target, 'root'));
    const sourceChild = filter.children.get('file')!;
    const copy = new BlockCopy({
      source: sourceChild,
      target: targetChild,
      bitmap: new ClusterBitmap(geometry.granularity, source.length),
      maxChunk: geometry.maxOp,
      unmap: args.unmap ?? true,
      targetBackingLater: ending.backingLater,
      onProgress: (bytes) => job.progress(bytes),
    });
    const state = new MirrorState(copy, job, args['copy-mode'] === 'write-blocking');
    const writes = new MirrorWrites(source, targetChild, state, `mirror ${job.id}`);
    writes.install();
    driver.init({
      source,
      sourceChild,
      targetChild,
      state,
      pivot: new MirrorPivot({ graph: this.graph, source, filter, target, writes, replaces: args.replaces }),
      geometry,
      scan: { sync, zeroTarget: request.zeroTarget },
      onSourceError: args['on-source-error'] ?? 'report',
      onTargetError: args['on-target-error'] ?? 'report',
      releaseTarget: ending.releaseTarget,
      linkTargetBacking: request.linkTargetBacking ?? (async () => undefined),
    });
    return () => writes.remove();
  }
}
