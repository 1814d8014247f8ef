/**
 * The job framework with a test job type, through the QMP verbs (iotest 219's
 * shape): which verbs each status accepts, with QEMU's messages, and the
 * event sequences of success, manual finalize/dismiss, failure, cancel,
 * pause/resume, ready/complete and quit.
 */
import test from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { Job } from '../../../core/job/job.js';
import type { JobManager } from '../../../core/job/job-manager.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';
import stepJobPlugin, { startStepJob, type StepJobScript } from '../../fixtures/step-job/index.js';

interface Fixture {
  layer: BlockLayer;
  jobs: JobManager;
  events: string[];
  start(id: string, script: StepJobScript, options?: { autoFinalize?: boolean; autoDismiss?: boolean }): ReturnType<typeof startStepJob>;
  verb(command: string, args: Record<string, unknown>): Promise<string>;
}

async function fixture(): Promise<Fixture> {
  const layer = await createTestLayer({ plugins: ['job-commands', stepJobPlugin] });
  const jobs = layer.container.get<JobManager>(TOKENS.JobManager);
  const events: string[] = [];
  layer.hooks.event.tap('test', (e) => {
    const d = e.data ?? {};
    if (e.event === 'JOB_STATUS_CHANGE') events.push(`${d.id}:${d.status}`);
    else events.push(`${e.event}:${JSON.stringify(d)}`);
  });
  return {
    layer,
    jobs,
    events,
    start: (id, script, options) => startStepJob(jobs, id, script, options),
    verb: (command, args) =>
      layer.execute(command, args).then(
        () => 'ok',
        (e: Error) => e.message,
      ),
  };
}

const until = async (job: Job, status: string) => {
  for (let i = 0; i < 500 && job.status !== status; i++) await new Promise((r) => setTimeout(r, 2));
};

test('success with defaults: waiting, pending, COMPLETED, concluded, null; callbacks commit then clean', async (t) => {
  const f = await fixture();
  const { job, driver } = f.start('j', { steps: 3 });
  await until(job, 'null');
  t.deepEqual(f.events, [
    'j:created',
    'j:running',
    'j:waiting',
    'j:pending',
    'BLOCK_JOB_COMPLETED:{"type":"x-step","device":"j","len":3,"offset":3,"speed":0}',
    'j:concluded',
    'j:null',
  ]);
  t.deepEqual(driver.calls, ['prepare', 'commit', 'clean']);
  t.deepEqual(await f.layer.execute('query-jobs'), []);
});

test('every verb in running, paused, pending and concluded answers as QEMU (iotest 219)', async (t) => {
  const f = await fixture();
  const { job } = f.start('j', { steps: 1000, sleepNs: 1_000_000 }, { autoFinalize: false, autoDismiss: false });
  const refused = (verb: string, status: string) => `Job 'j' in state '${status}' cannot accept command verb '${verb}'`;
  t.is(await f.verb('job-complete', { id: 'j' }), refused('complete', 'running'));
  t.is(await f.verb('job-finalize', { id: 'j' }), refused('finalize', 'running'));
  t.is(await f.verb('job-dismiss', { id: 'j' }), refused('dismiss', 'running'));
  t.is(await f.verb('job-resume', { id: 'j' }), "Can't resume a job that was not paused");
  t.is(await f.verb('job-pause', { id: 'j' }), 'ok');
  t.is(job.status, 'paused', 'a sleeping job is parked before the reply');
  t.is(await f.verb('job-pause', { id: 'j' }), 'Job is already paused');
  t.is(await f.verb('block-job-complete', { device: 'j' }), refused('complete', 'paused'));
  const offset = job.currentProgress;
  await new Promise((r) => setTimeout(r, 30));
  t.is(job.currentProgress, offset, 'progress is frozen while paused');
  t.is(await f.verb('block-job-resume', { device: 'j' }), 'ok');
  t.is(job.status, 'running');
  t.is(await f.verb('block-job-set-speed', { device: 'j', speed: -1 }), "Parameter 'speed' expects a non-negative value");
  t.is(await f.verb('block-job-set-speed', { device: 'j', speed: 0 }), 'ok');
  (job.driver as unknown as { script: StepJobScript }).script.sleepNs = 0;
  await until(job, 'pending');
  t.true(f.events.includes('BLOCK_JOB_PENDING:{"type":"x-step","id":"j"}'));
  for (const verb of ['pause', 'resume', 'complete', 'dismiss']) {
    const expected = verb === 'resume' ? "Can't resume a job that was not paused" : refused(verb, 'pending');
    t.is(await f.verb(`job-${verb}`, { id: 'j' }), expected, verb);
  }
  t.is(await f.verb('block-job-set-speed', { device: 'j', speed: 1 }), refused('set-speed', 'pending'));
  t.is(await f.verb('job-finalize', { id: 'j' }), 'ok');
  t.is(job.status, 'concluded', 'finalize returns once the group concluded');
  t.is(await f.verb('job-cancel', { id: 'j' }), refused('cancel', 'concluded'));
  t.is(await f.verb('job-finalize', { id: 'j' }), refused('finalize', 'concluded'));
  t.is(await f.verb('block-job-dismiss', { id: 'j' }), 'ok');
  t.deepEqual(f.events.slice(-3), ['BLOCK_JOB_COMPLETED:{"type":"x-step","device":"j","len":1000,"offset":1000,"speed":0}', 'j:concluded', 'j:null']);
  t.is(await f.verb('job-dismiss', { id: 'j' }), 'Job not found');
  t.is(await f.verb('block-job-dismiss', { id: 'j' }), "Block job 'j' not found");
});

test('a failing job: aborting, COMPLETED with the error, concluded; query-jobs shows the error until dismissed', async (t) => {
  const f = await fixture();
  const { job, driver } = f.start('j', { steps: 5, failAt: { step: 2, message: 'Input/output error' } }, { autoDismiss: false });
  await until(job, 'concluded');
  t.deepEqual(f.events, [
    'j:created',
    'j:running',
    'j:aborting',
    'BLOCK_JOB_COMPLETED:{"type":"x-step","device":"j","len":5,"offset":2,"speed":0,"error":"Input/output error"}',
    'j:concluded',
  ]);
  t.deepEqual(driver.calls, ['abort', 'clean'], 'no prepare or commit on failure');
  t.deepEqual(await f.layer.execute('query-jobs'), [
    { id: 'j', type: 'x-step', status: 'concluded', 'current-progress': 2, 'total-progress': 5, error: 'Input/output error' },
  ]);
});

test('cancel: a user-paused job is resumed, then aborting, CANCELLED, concluded, null; the reply comes after', async (t) => {
  const f = await fixture();
  const { job } = f.start('j', { steps: 1000, sleepNs: 1_000_000 });
  await f.verb('block-job-pause', { device: 'j' });
  t.is(await f.verb('block-job-cancel', { device: 'j' }), "The block job for device 'j' is currently paused");
  t.is(await f.verb('block-job-cancel', { device: 'j', force: true }), 'ok');
  t.is(job.status, 'null');
  t.deepEqual(f.events.slice(2), ['j:paused', 'j:running', 'j:aborting', `BLOCK_JOB_CANCELLED:{"type":"x-step","device":"j","len":1000,"offset":${job.currentProgress},"speed":0}`, 'j:concluded', 'j:null']);
});

test('job-cancel needs no force for a paused job; cancelled jobs report "Operation canceled"', async (t) => {
  const f = await fixture();
  const { job } = f.start('j', { steps: 1000, sleepNs: 1_000_000 }, { autoDismiss: false });
  await f.verb('job-pause', { id: 'j' });
  t.is(await f.verb('job-cancel', { id: 'j' }), 'ok');
  t.is(job.status, 'concluded');
  t.is(job.error, 'Operation canceled');
});

test('ready and standby: complete is accepted in both; pause in ready is standby', async (t) => {
  const f = await fixture();
  const { job } = f.start('m', { steps: 2, ready: true });
  await until(job, 'ready');
  t.true(f.events.includes('BLOCK_JOB_READY:{"type":"x-step","device":"m","len":2,"offset":2,"speed":0}'));
  t.is(await f.verb('job-pause', { id: 'm' }), 'ok');
  t.is(job.status, 'standby');
  t.is(await f.verb('job-complete', { id: 'm' }), 'ok', 'accepted while paused');
  t.is(await f.verb('job-resume', { id: 'm' }), 'ok');
  await until(job, 'null');
  t.deepEqual(f.events.filter((e) => e.startsWith('m:')), ['m:created', 'm:running', 'm:ready', 'm:standby', 'm:ready', 'm:waiting', 'm:pending', 'm:concluded', 'm:null']);
});

test('complete without completion support, or after cancel, is refused with QEMU\'s message', async (t) => {
  const f = await fixture();
  const { job, driver } = f.start('m', { steps: 1, ready: true });
  await until(job, 'ready');
  (driver as { complete?: unknown }).complete = undefined;
  t.is(await f.verb('job-complete', { id: 'm' }), "The active block job 'm' cannot be completed");
});

test('quit cancels running jobs before it returns (iotest 185)', async (t) => {
  const f = await fixture();
  const { job } = f.start('j', { steps: 1000, sleepNs: 100_000_000 });
  await f.layer.execute('quit');
  t.is(job.status, 'null');
  t.deepEqual(f.events.slice(-4), [
    'j:aborting',
    `BLOCK_JOB_CANCELLED:{"type":"x-step","device":"j","len":1000,"offset":${job.currentProgress},"speed":0}`,
    'j:concluded',
    'j:null',
  ]);
});

test('job ids: well-formed and unique among all jobs, concluded ones included', async (t) => {
  const f = await fixture();
  f.start('keep', { steps: 1 }, { autoDismiss: false });
  t.throws(() => f.start('1abc', { steps: 1 }), { message: "Invalid job ID '1abc'" });
  t.throws(() => f.start('', { steps: 1 }), { message: "Invalid job ID ''" });
  await new Promise((r) => setTimeout(r, 20));
  t.throws(() => f.start('keep', { steps: 1 }), { message: "Job ID 'keep' already in use" });
  t.is(await f.verb('job-pause', { id: 'nope' }), 'Job not found');
  t.is(await f.verb('block-job-pause', { device: 'nope' }), "Block job 'nope' not found");
});
