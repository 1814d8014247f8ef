/**
 * What the core's global hooks say about a job. The job framework (Job,
 * JobManager, the state and verb tables) builds on these names; they are
 * QEMU's JobType and JobStatus.
 */
/** QEMU's job types; a plugin may contribute a type of its own name. */
export type JobType =
  | 'commit'
  | 'stream'
  | 'mirror'
  | 'backup'
  | 'create'
  | 'amend'
  | 'snapshot-load'
  | 'snapshot-save'
  | 'snapshot-delete'
  | (string & {});

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
