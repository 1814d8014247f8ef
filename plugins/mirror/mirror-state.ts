/**
 * What the mirror job and its write interception share: the dirty bitmap
 * (inside the copy engine), the bytes on their way to the target, and the
 * failures the job still has to act on.
 */
import type { BlockCopy, CopyError } from '../../core/copy/block-copy.js';
import type { ClusterBitmap } from '../../core/bitmap/cluster-bitmap.js';
import type { Job } from '../../core/job/job.js';

export class MirrorState {
  /** Copy failures (background copies, write-blocking writes, flushes) not yet handled by the job. */
  readonly failures: CopyError[] = [];
  /** Bytes background copies have claimed and not finished. */
  pendingBytes = 0;
  /** Bytes of write-blocking guest writes being written to the target. */
  activeBytes = 0;
  /** Guest writes are written to the target too (write-blocking, from the end of the initial scan). */
  active = false;
  /** The job failed: write-blocking writes stop copying (QEMU's s->ret < 0). */
  failed = false;

  constructor(
    readonly copy: BlockCopy,
    readonly job: Job,
    readonly writeBlocking: boolean,
  ) {}

  get bitmap(): ClusterBitmap {
    return this.copy.bitmap;
  }

  /** The guest changed `[offset, offset + bytes)`: copy it (again). */
  markDirty(offset: number, bytes: number): void {
    const { first, end } = this.bitmap.clustersOf(offset, bytes);
    for (let c = first; c < end && c < this.bitmap.clusters; c++) this.bitmap.set(c);
    this.job.wake();
  }

  fail(error: CopyError): void {
    this.failures.push(error);
    this.job.wake();
  }

  /** QEMU's job_progress_set_remaining: total = done + in flight + dirty + write-blocking writes in flight. */
  updateRemaining(): void {
    this.job.totalProgress = this.job.currentProgress + this.pendingBytes + this.bitmap.dirtyBytes + this.activeBytes;
  }

  /** Write-blocking writes go to the target now (QEMU's should_copy_to_target). */
  get copiesWrites(): boolean {
    return this.writeBlocking && this.active && !this.failed && !this.job.isCancelled;
  }
}
