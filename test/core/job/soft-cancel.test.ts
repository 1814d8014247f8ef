/**
 * Soft cancel (QEMU's job_cancel with a driver `.cancel` that returns
 * false): the job is asked to stop but is not cancelled for good — pause
 * points do not throw, sleeps are not cut short, and it ends COMPLETED,
 * not CANCELLED; a forced cancel afterwards wins. A soft cancel of a job
 * whose run is over is ignored. block-job-cancel of a soft-cancelled job
 * that then waits for job-finalize returns instead of waiting for ever.
 */
import test from 'ava';
import type { Job } from '../../../core/job/job.js';
import type { JobDriver } from '../../../core/job/job-driver.js';
import type { JobManager } from '../../../core/job/job-manager.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';
import stepJobPlugin from '../../fixtures/step-job/index.js';

/** Runs until a cancel is requested; soft cancels are accepted once `ready`. */
class SoftJob implements JobDriver {
  ready = false;
  cancels: boolean[] = [];

  async run(job: Job): Promise<void> {
    job.markReady();
    this.ready = true;
    while (!job.isCancelRequested) await job.sleep(Number.POSITIVE_INFINITY);
    // A soft-cancelled job finishes its work: pause points go on working.
    await job.pausePoint();
    await job.sleep(1_000_000);
  }

  cancel(_job: Job, force: boolean): boolean {
    this.cancels.push(force);
    return force || !this.ready;
  }
}

async function fixture(autoFinalize = true) {
  const layer = await createTestLayer({ plugins: ['job-commands', stepJobPlugin] });
  const jobs = layer.container.get<JobManager>(TOKENS.JobManager);
  const events: string[] = [];
  layer.hooks.event.tap('test', (e) => events.push(e.event === 'JOB_STATUS_CHANGE' ? String(e.data!.status) : e.event));
  const driver = new SoftJob();
  const job = jobs.create({ id: 'j', type: 'x-step', driver: () => driver, autoFinalize });
  job.start();
  while (job.status !== 'ready') await new Promise((r) => setTimeout(r, 1));
  return { layer, jobs, job, driver, events };
}

test('a soft cancel lets the job finish: COMPLETED, no error', async (t) => {
  const { layer, job, driver, events } = await fixture();
  await layer.execute('block-job-cancel', { device: 'j' });
  t.deepEqual(driver.cancels, [false]);
  t.true(job.isCancelRequested);
  t.false(job.isCancelled);
  t.deepEqual(events, ['created', 'running', 'ready', 'BLOCK_JOB_READY', 'waiting', 'pending', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
  t.is(job.error, undefined);
});

test('a forced cancel after a soft one wins: CANCELLED', async (t) => {
  const { layer, jobs, job, driver, events } = await fixture();
  job.requestCancel(false);
  t.false(job.isCancelled);
  await jobs.cancel(job, true);
  t.deepEqual(driver.cancels, [false, true]);
  t.deepEqual(events.slice(-4), ['aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null']);
  t.is(layer.graph.list().length, 0);
});

test('block-job-cancel returns once a soft-cancelled job waits for job-finalize', async (t) => {
  const { layer, job, events } = await fixture(false);
  await layer.execute('block-job-cancel', { device: 'j' });
  t.is(job.status, 'pending');
  t.deepEqual(events.slice(-3), ['waiting', 'pending', 'BLOCK_JOB_PENDING']);
  // A soft cancel of a job whose run is over is ignored.
  job.requestCancel(false);
  t.false(job.isCancelled);
  await layer.execute('job-finalize', { id: 'j' });
  t.deepEqual(events.slice(-3), ['BLOCK_JOB_COMPLETED', 'concluded', 'null']);
});
