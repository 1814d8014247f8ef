/** query-jobs and query-block-jobs: every job (block jobs only, for the latter: not blockdev-create's), newest first. */
import type { JobManager } from '../../core/job/job-manager.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { Qapi } from '../../core/schema/qapi.js';
import { BlockJobInfoSchema, blockJobInfo, JobInfoSchema, jobInfo } from './job-info.js';

export function queryJobsCommands(jobs: JobManager): QmpCommand[] {
  return [
    {
      name: 'query-jobs',
      summary: 'List every job',
      returns: Qapi.list(JobInfoSchema),
      execute: () => jobs.list().map(jobInfo),
    },
    {
      name: 'query-block-jobs',
      summary: 'List the block jobs, with their legacy fields',
      returns: Qapi.list(BlockJobInfoSchema),
      execute: () => jobs.list().filter((job) => job.isBlockJob).map(blockJobInfo),
    },
  ];
}
