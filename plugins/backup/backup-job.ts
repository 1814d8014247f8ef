/**
 * The backup job (QEMU's block/backup.c): copies the clusters of the copy
 * bitmap in the background, several copies in flight, rate-limited; with
 * sync=none it copies nothing itself and lives until cancelled, while
 * copy-before-write saves what the guest overwrites. Errors follow the
 * on-source-error / on-target-error policies; the clusters of a failed
 * copy stay marked and a later pass retries them. A dirty bitmap the job
 * froze is settled when it ends, by its bitmap-mode.
 */
import type { BitmapStore } from '../../core/bitmap/bitmap-store.js';
import type { DirtyBitmap } from '../../core/bitmap/dirty-bitmap.js';
import { type BlockCopy, CopyError } from '../../core/copy/block-copy.js';
import { type BlockdevOnErrorValue, handleJobError } from '../../core/job/error-policy.js';
import type { Job } from '../../core/job/job.js';
import type { JobDriver } from '../../core/job/job-driver.js';
import type { BitmapSyncModeValue } from './options.js';

export interface BackupJobSettings {
  sync: 'full' | 'top' | 'none' | 'bitmap';
  onSourceError: BlockdevOnErrorValue;
  onTargetError: BlockdevOnErrorValue;
  maxWorkers: number;
  /** The bitmap frozen for the job (the store gave it a successor), and what becomes of it. */
  syncBitmap?: { bitmap: DirtyBitmap; mode: BitmapSyncModeValue; bitmaps: BitmapStore };
  /** Undoes the job's graph changes (copy-before-write, filter node, target). */
  teardown: () => Promise<void>;
}

/** Pause before retrying after an ignored error, so a persistent one does not spin. */
const IGNORED_ERROR_BACKOFF_NS = 100_000_000;

export class BackupJob implements JobDriver {
  constructor(
    private readonly copy: BlockCopy,
    private readonly settings: BackupJobSettings,
  ) {}

  async run(job: Job): Promise<void> {
    if (this.settings.sync === 'none') {
      for (;;) await job.sleep(Number.POSITIVE_INFINITY);
    }
    while (this.copy.bitmap.count > 0 || this.copy.inFlightCount > 0) {
      const failure = await this.pass(job);
      if (failure !== undefined) await this.handle(job, failure);
      else if (this.copy.bitmap.count === 0) await this.copy.settled();
    }
  }

  commit(): void {
    this.settleBitmap(true);
  }

  abort(): void {
    this.settleBitmap(false);
  }

  async clean(): Promise<void> {
    await this.settings.teardown();
  }

  /** One walk over the bitmap; returns the first failure, once every copy it started has ended. */
  private async pass(job: Job): Promise<CopyError | undefined> {
    const running = new Set<Promise<void>>();
    let failure: CopyError | undefined;
    let next = 0;
    try {
      for (;;) {
        if (job.paused || job.isCancelled) {
          await Promise.all(running);
          await job.pausePoint();
        }
        if (failure !== undefined) break;
        const claim = this.copy.claimNext(next);
        if (claim === undefined) break;
        const wait = job.limiter.delay(this.copy.bytesOf(claim));
        if (wait > 0) {
          this.copy.unclaim(claim);
          // Not job.sleep: copies in flight must finish before the job parks, so progress stands still while paused.
          await job.nap(wait);
          continue;
        }
        next = claim.end;
        const task: Promise<void> = this.copy
          .copy(claim)
          .catch((error: unknown) => {
            failure ??= error as CopyError;
          })
          .finally(() => running.delete(task));
        running.add(task);
        if (running.size >= this.settings.maxWorkers) await Promise.race(running);
      }
    } finally {
      await Promise.all(running);
    }
    return failure;
  }

  /**
   * QEMU's backup_cleanup_sync_bitmap: on success (or always with
   * bitmap-mode always) the bitmap becomes what was written during the job;
   * otherwise (or always with never) those writes are added to what it
   * had. A failed job with bitmap-mode always also marks the clusters it
   * did not copy.
   */
  private settleBitmap(success: boolean): void {
    const settle = this.settings.syncBitmap;
    if (settle === undefined) return;
    const { bitmap, mode, bitmaps } = settle;
    bitmaps.thaw(bitmap, !((success || mode === 'always') && mode !== 'never'));
    if (success || mode !== 'always') return;
    const left = this.copy.bitmap;
    for (let first = left.nextSet(0); first >= 0; ) {
      const clear = left.nextClear(first);
      const end = clear < 0 ? left.clusters : clear;
      const { offset, bytes } = left.range(first, end);
      bitmap.setDirty(offset, bytes);
      first = end < left.clusters ? left.nextSet(end) : -1;
    }
  }

  private async handle(job: Job, failure: CopyError): Promise<void> {
    const policy = failure.operation === 'read' ? this.settings.onSourceError : this.settings.onTargetError;
    const action = await handleJobError(job, policy, failure.operation, failure.ioError);
    if (action === 'report') throw failure.ioError;
    if (action === 'ignore') await job.sleep(IGNORED_ERROR_BACKOFF_NS);
  }
}
