/**
 * QEMU's job lifecycle as two tables (job.c's JobSTT and JobVerbTable):
 * which status may follow which, and which user verb each status accepts;
 * and the statuses in which a job's run is over.
 * test/core/job/job-states.test.ts walks every cell.
 */
import type { JobStatus } from './job-handle.js';

export type JobVerb = 'cancel' | 'pause' | 'resume' | 'set-speed' | 'complete' | 'finalize' | 'dismiss';

/** Allowed transitions: from → to. `aborting → aborting` is allowed and silent. */
export const JOB_TRANSITIONS: Readonly<Record<JobStatus, readonly JobStatus[]>> = {
  undefined: ['created'],
  created: ['running', 'aborting', 'null'],
  running: ['paused', 'ready', 'waiting', 'aborting'],
  paused: ['running'],
  ready: ['standby', 'waiting', 'aborting'],
  standby: ['ready'],
  waiting: ['pending', 'aborting'],
  pending: ['aborting', 'concluded'],
  aborting: ['aborting', 'concluded'],
  concluded: ['null'],
  null: [],
};

/** The statuses in which each verb is accepted. */
export const JOB_VERBS: Readonly<Record<JobVerb, readonly JobStatus[]>> = {
  cancel: ['created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending'],
  pause: ['created', 'running', 'paused', 'ready', 'standby'],
  resume: ['created', 'running', 'paused', 'ready', 'standby'],
  'set-speed': ['created', 'running', 'paused', 'ready', 'standby'],
  complete: ['ready', 'standby'],
  finalize: ['pending'],
  dismiss: ['concluded'],
};

/** Statuses after the run ended (QEMU's job_is_completed). */
export const RUN_OVER: readonly JobStatus[] = ['waiting', 'pending', 'aborting', 'concluded', 'null'];

export function transitionAllowed(from: JobStatus, to: JobStatus): boolean {
  return JOB_TRANSITIONS[from].includes(to);
}

export function verbAllowed(verb: JobVerb, status: JobStatus): boolean {
  return JOB_VERBS[verb].includes(status);
}
