/** query-jobs' JobInfo and query-block-jobs' BlockJobInfo, as QEMU 7.2 reports them. */
import type { Job } from '../../core/job/job.js';
import { Qapi } from '../../core/schema/qapi.js';

export const JobInfoSchema = Qapi.struct(
  'JobInfo',
  {
    id: Qapi.str(),
    type: Qapi.str(),
    status: Qapi.str(),
    'current-progress': Qapi.int(),
    'total-progress': Qapi.int(),
    error: Qapi.optional(Qapi.str()),
  },
);

export const BlockJobInfoSchema = Qapi.struct('BlockJobInfo', {
  type: Qapi.str(),
  device: Qapi.str(),
  len: Qapi.int(),
  offset: Qapi.int(),
  busy: Qapi.bool(),
  paused: Qapi.bool(),
  speed: Qapi.int(),
  'io-status': Qapi.enum('BlockDeviceIoStatus', ['ok', 'failed', 'nospace']),
  ready: Qapi.bool(),
  status: Qapi.str(),
  'auto-finalize': Qapi.bool(),
  'auto-dismiss': Qapi.bool(),
  error: Qapi.optional(Qapi.str()),
});

export function jobInfo(job: Job): Record<string, unknown> {
  const info: Record<string, unknown> = {
    id: job.id,
    type: job.type,
    status: job.status,
    'current-progress': job.currentProgress,
    'total-progress': job.totalProgress,
  };
  if (job.error !== undefined) info.error = job.error;
  return info;
}

export function blockJobInfo(job: Job): Record<string, unknown> {
  const info: Record<string, unknown> = {
    type: job.type,
    device: job.id,
    len: job.totalProgress,
    offset: job.currentProgress,
    busy: job.busy,
    paused: job.paused,
    speed: job.speed,
    'io-status': job.ioStatus,
    ready: job.status === 'ready' || job.status === 'standby',
    status: job.status,
    'auto-finalize': job.autoFinalize,
    'auto-dismiss': job.autoDismiss,
  };
  if (job.error !== undefined) info.error = job.error;
  return info;
}
