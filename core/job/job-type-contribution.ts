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
}
