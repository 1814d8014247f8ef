/**
 * The job verbs, in both QEMU spellings: `job-*` name the job by `id` and
 * answer "Job not found"; the legacy `block-job-*` name it by `device` (the
 * job id too, except finalize and dismiss, which take `id`) and answer
 * DeviceNotActive. The checks and their order are QEMU's (job.c, blockjob.c).
 */
import type { Job } from '../../core/job/job.js';
import type { JobManager } from '../../core/job/job-manager.js';
import { BlockLayerError } from '../../core/errors.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { Qapi, type TObject } from '../../core/schema/qapi.js';

type Verb = (jobs: JobManager, job: Job, args: Record<string, unknown>) => Promise<void> | void;

const VERBS: Record<string, Verb> = {
  cancel: (jobs, job, args) => jobs.cancel(job, (args.force as boolean | undefined) ?? true),
  pause: (_jobs, job) => job.userPause(),
  resume: (_jobs, job) => job.userResume(),
  complete: (_jobs, job) => job.userComplete(),
  finalize: (jobs, job) => jobs.finalize(job),
  dismiss: (_jobs, job) => job.userDismiss(),
};

const byId = (verb: string): TObject => Qapi.struct(`q_obj_job-${verb}-arg`, { id: Qapi.str() });
const byDevice = (verb: string, extra = {}): TObject =>
  Qapi.struct(`q_obj_block-job-${verb}-arg`, { device: Qapi.str(), ...extra });

export function jobVerbCommands(jobs: JobManager): QmpCommand[] {
  const commands: QmpCommand[] = Object.entries(VERBS).map(([verb, run]) => ({
    name: `job-${verb}`,
    summary: `The job verb '${verb}'`,
    args: byId(verb),
    execute: async (args: { id: string }) => run(jobs, jobs.require(args.id), args),
  }));
  const legacy: [string, TObject, (args: Record<string, unknown>) => Promise<void> | void][] = [
    [
      'cancel',
      byDevice('cancel', { force: Qapi.optional(Qapi.bool({ default: false })) }),
      async (args) => {
        const job = jobs.requireBlockJob(args.device as string);
        const force = (args.force as boolean | undefined) ?? false;
        if (job.isUserPaused && !force) {
          throw new BlockLayerError(`The block job for device '${job.id}' is currently paused`);
        }
        await jobs.cancel(job, force);
      },
    ],
    ['pause', byDevice('pause'), (args) => jobs.requireBlockJob(args.device as string).userPause()],
    ['resume', byDevice('resume'), (args) => jobs.requireBlockJob(args.device as string).userResume()],
    ['complete', byDevice('complete'), (args) => jobs.requireBlockJob(args.device as string).userComplete()],
    [
      'set-speed',
      byDevice('set-speed', { speed: Qapi.int() }),
      (args) => jobs.requireBlockJob(args.device as string).userSetSpeed(args.speed as number),
    ],
    ['finalize', Qapi.struct('q_obj_block-job-finalize-arg', { id: Qapi.str() }), (args) => jobs.finalize(jobs.requireBlockJob(args.id as string))],
    ['dismiss', Qapi.struct('q_obj_block-job-dismiss-arg', { id: Qapi.str() }), (args) => jobs.requireBlockJob(args.id as string).userDismiss()],
  ];
  for (const [verb, args, execute] of legacy) {
    commands.push({ name: `block-job-${verb}`, summary: `The legacy block job verb '${verb}'`, args, execute });
  }
  return commands;
}
