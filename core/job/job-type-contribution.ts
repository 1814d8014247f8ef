/**
 * A job type a plugin contributes (QEMU's JobDriver). The job framework
 * creates jobs of a type through its contribution; types are unique by name.
 */
import type { JobType } from './job-handle.js';

export interface JobTypeContribution {
  /** QEMU's JobType name, reported in query-jobs and job events. */
  readonly type: JobType;
  /** One line for documentation. */
  readonly summary: string;
  /**
   * Whether jobs of this type are block jobs (QEMU's BlockJob; default
   * true). A plain job (blockdev-create's `create`) sends no BLOCK_JOB_*
   * events, is not listed by query-block-jobs, and block-job-* commands do
   * not find it.
   */
  readonly blockJob?: boolean;
}
