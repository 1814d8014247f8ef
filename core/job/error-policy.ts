/**
 * What a job does when its I/O fails (QEMU's BlockdevOnError and
 * block_job_error_action): every error is announced with BLOCK_JOB_ERROR;
 * `report` fails the job, `ignore` goes on (the work is retried later),
 * `stop` pauses the job as if the user had, with io-status set, until it is
 * resumed; `enospc` (and `auto`, for jobs) stop on ENOSPC and report
 * anything else.
 */
import type { BlockIoError } from '../errors.js';
import { Qapi, type Static } from '../schema/qapi.js';
import type { Job } from './job.js';

export const BlockdevOnError = Qapi.enum('BlockdevOnError', ['report', 'ignore', 'enospc', 'stop', 'auto']);
export type BlockdevOnErrorValue = Static<typeof BlockdevOnError>;

export type ErrorAction = 'report' | 'ignore' | 'stop';

export function errorAction(policy: BlockdevOnErrorValue, error: BlockIoError): ErrorAction {
  switch (policy) {
    case 'report':
    case 'ignore':
    case 'stop':
      return policy;
    case 'enospc':
    case 'auto':
      return error.errno === 'ENOSPC' ? 'stop' : 'report';
  }
}

/** Announces the error and applies the policy; with `stop` this returns once the job is resumed (or throws if cancelled). */
export async function handleJobError(
  job: Job,
  policy: BlockdevOnErrorValue,
  operation: 'read' | 'write',
  error: BlockIoError,
): Promise<ErrorAction> {
  const action = errorAction(policy, error);
  job.publish('BLOCK_JOB_ERROR', { device: job.id, operation, action });
  if (action === 'stop') await job.stopOnError(error.errno === 'ENOSPC' ? 'nospace' : 'failed');
  return action;
}
