/**
 * The prepare step shared by blockdev-backup and drive-backup, once the
 * source is drained and the target node is known: QEMU's checks in order,
 * then the point in time — the copy bitmap, the copy-before-write
 * interception and filter node, and the job in status `created` — all
 * while the source is drained, so no write slips between them. A backup
 * with a dirty bitmap freezes it here (a successor records the writes from
 * now on); sync=bitmap copies what the frozen bitmap marks. Commit starts
 * the job; abort cancels it, which undoes all of this.
 */
import { inject, injectable } from 'inversify';
import type { BitmapStore } from '../../core/bitmap/bitmap-store.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { ClusterBitmap } from '../../core/bitmap/cluster-bitmap.js';
import { BlockCopy } from '../../core/copy/block-copy.js';
import { BlockLayerError } from '../../core/errors.js';
import type { Job } from '../../core/job/job.js';
import type { JobManager } from '../../core/job/job-manager.js';
import { TOKENS } from '../../core/tokens.js';
import type { PreparedAction, TransactionContext } from '../../core/transaction/transaction-action.js';
import { checkBitmapArguments, checkJobArguments, copyGeometry, type SyncBitmap, type SyncChoice } from './backup-checks.js';
import { BackupJob } from './backup-job.js';
import { CopyBeforeWrite, copyBeforeWriteDriver } from './copy-before-write.js';
import type { BackupCommonArgs } from './options.js';

@injectable()
export class BackupPreparer {
  constructor(
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.JobManager) private readonly jobs: JobManager,
    @inject(TOKENS.BitmapStore) private readonly bitmaps: BitmapStore,
  ) {}

  /**
   * `releaseTarget` closes a target the action opened itself (drive-backup);
   * it runs when the job ends, or at once if prepare fails.
   */
  async prepare(
    args: BackupCommonArgs,
    source: BlockNode,
    target: BlockNode,
    context: TransactionContext,
    releaseTarget: () => Promise<void> = async () => undefined,
  ): Promise<PreparedAction> {
    let filter: BlockNode | undefined;
    let frozen: SyncBitmap | undefined;
    try {
      const choice = checkBitmapArguments(args, source, this.bitmaps);
      checkJobArguments(args, source, target, this.graph);
      if (choice.syncBitmap !== undefined) {
        this.bitmaps.freeze(choice.syncBitmap.bitmap);
        frozen = choice.syncBitmap;
      }
      filter = await this.graph.openFilter(copyBeforeWriteDriver, source, args['filter-node-name']).catch((error: unknown) => {
        throw new BlockLayerError(`Could not create node: ${(error as Error).message}`);
      });
      const job = this.createJob(args, choice, source, target, filter, context, releaseTarget);
      return {
        commit: () => job.start(),
        // A grouped transaction's abort may have taken this job down with another one already.
        abort: async () => {
          if (job.status === 'created') await this.jobs.cancel(job, true);
        },
      };
    } catch (error) {
      if (frozen !== undefined) this.bitmaps.thaw(frozen.bitmap, true);
      if (filter !== undefined) await this.graph.dropFilter(filter);
      await releaseTarget();
      throw error;
    }
  }

  private createJob(
    args: BackupCommonArgs,
    { sync, syncBitmap }: SyncChoice,
    source: BlockNode,
    target: BlockNode,
    filter: BlockNode,
    context: TransactionContext,
    releaseTarget: () => Promise<void>,
  ): Job {
    const geometry = copyGeometry(args, target);
    const id = args['job-id'] ?? this.graph.deviceName(source);
    this.jobs.checkId(id);
    if ((args.speed ?? 0) < 0) throw new BlockLayerError("Parameter 'speed' expects a non-negative value");
    const bitmap = new ClusterBitmap(geometry.clusterSize, source.length);
    if (sync === 'bitmap' && syncBitmap !== undefined) {
      // The bitmap's granules may be smaller or larger than backup's clusters: each dirty byte's cluster is copied.
      for (const area of syncBitmap.bitmap.dirtyAreas(0, source.length)) {
        const { first, end } = bitmap.clustersOf(area.offset, area.length);
        bitmap.setRange(first, end);
      }
    } else {
      bitmap.fill();
    }
    return this.jobs.create({
      id,
      type: 'backup',
      txn: context.jobTxn,
      autoFinalize: args['auto-finalize'] ?? true,
      autoDismiss: args['auto-dismiss'] ?? true,
      speed: args.speed ?? 0,
      driver: (job) => {
        job.hold(this.graph.attach(job, filter, 'main node'));
        const targetEdge = this.graph.attach(job, target, 'target');
        job.hold(targetEdge);
        const copy = new BlockCopy({
          source: filter.children.get('file')!,
          target: targetEdge,
          bitmap,
          maxChunk: geometry.chunk,
          skipUnallocated: sync === 'top',
          compress: args.compress ?? false,
          useCopyRange: args['x-perf']?.['use-copy-range'] ?? false,
          onProgress: (bytes) => job.progress(bytes),
          onSkip: (bytes) => (job.totalProgress -= bytes),
        });
        job.totalProgress = bitmap.dirtyBytes;
        const shown = this.bitmaps.showJobBitmap(source, bitmap);
        const interception = new CopyBeforeWrite(source, copy, `backup ${job.id}`);
        interception.install();
        this.graph.replace(source, filter);
        return new BackupJob(copy, {
          sync,
          onSourceError: args['on-source-error'] ?? 'report',
          onTargetError: args['on-target-error'] ?? 'report',
          maxWorkers: geometry.workers,
          ...(syncBitmap === undefined ? {} : { syncBitmap: { ...syncBitmap, bitmaps: this.bitmaps } }),
          teardown: async () => {
            this.bitmaps.release(shown);
            await source.drained(async () => {
              interception.remove();
              await this.graph.dropFilter(filter);
            });
            await releaseTarget();
          },
        });
      },
    });
  }
}
