/**
 * What the core's global hooks say about a job. The job framework (Job,
 * JobManager, the state and verb tables) builds on these names; they are
 * QEMU's JobType and JobStatus.
 */
export type JobType =
  | 'commit'
  | 'stream'
  | 'mirror'
  | 'backup'
  | 'create'
  | 'amend'
  | 'snapshot-load'
  | 'snapshot-save'
  | 'snapshot-delete';

export type JobStatus =
  | 'undefined'
  | 'created'
  | 'running'
  | 'paused'
  | 'ready'
  | 'standby'
  | 'waiting'
  | 'pending'
  | 'aborting'
  | 'concluded'
  | 'null';

export interface JobHandle {
  readonly id: string;
  readonly type: JobType;
  readonly status: JobStatus;
}
