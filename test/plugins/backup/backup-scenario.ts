/**
 * Generated backup scenarios for point-in-time.test.ts: the scenario
 * shape, running its guest I/O and job verbs against a backup fixture, and
 * the checks every run shares. A failed check throws PropertyFailure with
 * what went wrong; fast-check then shrinks the scenario.
 */
import fc from 'fast-check';
import { type BackupFixture, backupFixture, CLUSTER, fillRandom, JOB, jobStatus, readAll, ticks } from './backup-fixture.js';
import {
  describeOp,
  type GuestOp,
  isSomeOrder,
  issue,
  matchRequests,
  opArb,
  type OpSpec,
  overlapGroups,
  resolveOp,
  span,
} from './guest-io-model.js';

export type Control = 'none' | 'pause' | 'resume' | 'speed0' | 'speed1' | 'tick' | 'drain';

export interface Step {
  ops: OpSpec[];
  /** A job verb issued together with the operations, or alone when there are none. */
  control: Control;
  /** Event-loop turns for 'tick' and 'drain'. */
  turns: number;
}

export interface Scenario {
  clusters: number;
  tail: number;
  seed: number;
  srcDensity: number;
  tgtDensity: number;
  maxChunk: number;
  maxWorkers: number;
  /** Writes racing with blockdev-backup itself, each after some event-loop turns. */
  race: { op: OpSpec; turns: number }[];
  steps: Step[];
  /** End the job with a cancel issued together with the last step's operations. */
  cancelWithLastStep: boolean;
  /** Operations issued as the job is ended (unthrottled or cancelled), each after some event-loop turns. */
  ending: { op: OpSpec; turns: number }[];
}

const controlArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Control>('none') },
  { weight: 2, arbitrary: fc.constant<Control>('pause') },
  { weight: 2, arbitrary: fc.constant<Control>('resume') },
  { weight: 2, arbitrary: fc.constant<Control>('speed0') },
  { weight: 1, arbitrary: fc.constant<Control>('speed1') },
  { weight: 2, arbitrary: fc.constant<Control>('tick') },
  { weight: 1, arbitrary: fc.constant<Control>('drain') },
);

const stepArb: fc.Arbitrary<Step> = fc.record({
  ops: fc.array(opArb, { minLength: 0, maxLength: 4 }),
  control: controlArb,
  turns: fc.integer({ min: 1, max: 30 }),
});

export function scenarioArb(options: { race: boolean; cancel: fc.Arbitrary<boolean> }): fc.Arbitrary<Scenario> {
  return fc.record({
    clusters: fc.integer({ min: 64, max: 128 }),
    tail: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: CLUSTER - 1 })),
    seed: fc.integer(),
    srcDensity: fc.integer({ min: 0, max: 100 }),
    tgtDensity: fc.integer({ min: 0, max: 100 }),
    maxChunk: fc.constantFrom(0, CLUSTER, 2 * CLUSTER, 512 * 1024),
    maxWorkers: fc.constantFrom(1, 2, 64),
    race: options.race
      ? fc.array(fc.record({ op: opArb, turns: fc.integer({ min: 0, max: 3 }) }), { maxLength: 3 })
      : fc.constant([]),
    steps: fc.array(stepArb, { minLength: 1, maxLength: 10 }),
    cancelWithLastStep: options.cancel,
    ending: fc.array(fc.record({ op: opArb, turns: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 80 })) }), { maxLength: 4 }),
  });
}

/** What the runs exercised, logged per test so a generator that stopped reaching a case shows. */
export const stats = {
  runs: 0,
  guestOps: 0,
  opsWhileJobRan: 0,
  opsWhileUserPaused: 0,
  opsWhileBackgroundCopies: 0,
  discardsDropped: 0,
  pausesTaken: 0,
  racingBeforePointInTime: 0,
  racingAfterPointInTime: 0,
  finishedBeforeLastStep: 0,
  completed: 0,
  cancelled: 0,
  cbwRequests: 0,
  endingOpsIntercepted: 0,
  endingOpsAfterJob: 0,
};

export function takeStats(): string {
  const text = Object.entries(stats)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  for (const key of Object.keys(stats) as (keyof typeof stats)[]) stats[key] = 0;
  return text;
}

export class PropertyFailure extends Error {}

export function check(condition: boolean, message: () => string): asserts condition {
  if (!condition) throw new PropertyFailure(message());
}

export function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

function jobTakesVerbs(f: BackupFixture): boolean {
  const status = jobStatus(f);
  return status === 'running' || status === 'paused';
}

/** Runs a job verb if the job can still take it (a full backup may finish during the steps). */
async function control(f: BackupFixture, what: Control, turns: number): Promise<void> {
  if (what === 'tick') return ticks(turns);
  // Another user drains the source for a while (a graph change, a transaction): the job pauses, guest I/O is held.
  if (what === 'drain') return f.src.drained(() => ticks(turns));
  const job = f.jobs.find(JOB);
  if (job === undefined || !jobTakesVerbs(f)) return;
  try {
    if (what === 'pause' && !job.isUserPaused) {
      await f.layer.execute('block-job-pause', { device: JOB });
      stats.pausesTaken++;
    }
    if (what === 'resume' && job.isUserPaused) await f.layer.execute('block-job-resume', { device: JOB });
    if (what === 'speed0') await f.layer.execute('block-job-set-speed', { device: JOB, speed: 0 });
    if (what === 'speed1') await f.layer.execute('block-job-set-speed', { device: JOB, speed: 1 });
  } catch (error) {
    if (jobTakesVerbs(f)) throw error;
  }
}

/** Cancels the job unless it already finished. */
export async function cancelJob(f: BackupFixture): Promise<void> {
  if (!jobTakesVerbs(f)) return;
  try {
    await f.layer.execute('block-job-cancel', { device: JOB, force: true });
  } catch (error) {
    if (jobTakesVerbs(f)) throw error;
  }
}

/**
 * Lets a full backup run to its end: resumed, unthrottled. A job paused by
 * the user may still have finished its run before reaching a pause point
 * (then it is pending, and, as in QEMU, takes no resume): verbs that fail
 * because the job moved on are fine.
 */
export async function finishJob(f: BackupFixture): Promise<void> {
  try {
    if (jobTakesVerbs(f) && f.jobs.find(JOB)?.isUserPaused === true) await f.layer.execute('block-job-resume', { device: JOB });
    if (jobTakesVerbs(f)) await f.layer.execute('block-job-set-speed', { device: JOB, speed: 0 });
  } catch (error) {
    if (jobTakesVerbs(f)) throw error;
  }
}

/**
 * Issues operations at once (with `alongside`), then checks each of them
 * succeeded and reached the source (a discard may stop at the filter),
 * that nothing else wrote to the source, that the source holds them
 * applied in some order, and moves the model on.
 */
export async function runBatch(
  f: BackupFixture,
  model: Buffer,
  ops: readonly GuestOp[],
  alongside: Promise<void>,
  issueOp: (op: GuestOp) => Promise<void> = (op) => issue(f.dev, op),
): Promise<void> {
  const seen = f.srcRequests.length;
  const job = f.jobs.find(JOB);
  stats.guestOps += ops.length;
  if (job !== undefined) stats.opsWhileJobRan += ops.length;
  if (job?.isUserPaused === true) stats.opsWhileUserPaused += ops.length;
  if (job?.speed === 0 && !job.paused && job.status === 'running') stats.opsWhileBackgroundCopies += ops.length;
  const results = await Promise.allSettled([...ops.map(issueOp), alongside]);
  results.forEach((r, i) => {
    const what = i < ops.length ? describeOp(ops[i]!) : 'the job verb';
    check(r.status === 'fulfilled', () => `${what} failed: ${String((r as PromiseRejectedResult).reason)}`);
  });
  const { reached, unexplained } = matchRequests(ops, f.srcRequests.slice(seen));
  check(unexplained.length === 0, () => `unexpected writes to the source: ${JSON.stringify(unexplained)}`);
  ops.forEach((op, i) => {
    check(op.kind === 'discard' || reached[i] !== undefined, () => `${describeOp(op)} never reached the source`);
    if (reached[i] === undefined) stats.discardsDropped++;
  });
  for (const group of overlapGroups(ops.filter((_, i) => reached[i] !== undefined))) {
    const { start, end } = span(group);
    const actual = await readAll(f.src, start, end - start);
    check(isSomeOrder(actual, model.subarray(start, end), start, group), () => {
      return `source after [${group.map(describeOp).join(', ')}] is not the model with them applied in any order`;
    });
    actual.copy(model, start);
  }
}

/** The generated steps; with `cancelWithLastStep` the last step's operations race with a cancel. */
export async function runSteps(f: BackupFixture, model: Buffer, s: Scenario, size: number): Promise<void> {
  for (const [index, step] of s.steps.entries()) {
    const ops = step.ops.map((spec) => resolveOp(spec, size)).filter((op): op is GuestOp => op !== undefined);
    const last = index === s.steps.length - 1;
    if (last && f.jobs.find(JOB) === undefined) stats.finishedBeforeLastStep++;
    const verbs = control(f, step.control, step.turns);
    await runBatch(f, model, ops, last && s.cancelWithLastStep ? Promise.all([verbs, cancelJob(f)]).then(() => undefined) : verbs);
  }
}

/** The end of the job (`end`: unthrottle or cancel) with the scenario's last operations racing with it. */
export async function runEnding(f: BackupFixture, model: Buffer, s: Scenario, size: number, end: () => Promise<void>): Promise<void> {
  const ending = s.ending.flatMap(({ op, turns }) => {
    const resolved = resolveOp(op, size);
    return resolved === undefined ? [] : [{ op: resolved, turns }];
  });
  const turnsOf = new Map(ending.map((e) => [e.op, e.turns]));
  const seen = f.srcRequests.length;
  // Operations with 0 turns go out before the verb, the others after it.
  const verb = Promise.resolve().then(end);
  await runBatch(f, model, ending.map((e) => e.op), verb, async (op) => {
    const turns = turnsOf.get(op)!;
    if (turns > 0) await ticks(turns - 1);
    await issue(f.dev, op);
  });
  for (const r of f.srcRequests.slice(seen)) {
    if (r.intercepted) stats.endingOpsIntercepted++;
    else stats.endingOpsAfterJob++;
  }
}

export interface Prepared {
  f: BackupFixture;
  size: number;
  srcStart: Buffer;
  tgtStart: Buffer;
}

export async function prepare(s: Scenario): Promise<Prepared> {
  const size = s.clusters * CLUSTER + s.tail;
  const f = await backupFixture(size);
  await fillRandom(f.src, s.seed, s.srcDensity);
  await fillRandom(f.tgt, s.seed ^ 0x5a5a5a5a, s.tgtDensity);
  f.srcRequests.length = 0;
  f.recordTarget();
  return { f, size, srcStart: await readAll(f.src), tgtStart: await readAll(f.tgt) };
}

export function backupArgs(s: Scenario, sync: string): Record<string, unknown> {
  const perf: Record<string, number> = { 'max-workers': s.maxWorkers };
  if (s.maxChunk > 0) perf['max-chunk'] = s.maxChunk;
  return { 'job-id': JOB, device: 'virtio0', target: 'tgt', sync, speed: 1, 'x-perf': perf };
}

/** The job, its filter and its interception are gone; the device is back on the source. */
export async function checkJobGone(f: BackupFixture): Promise<void> {
  check((await f.layer.execute<unknown[]>('query-block-jobs')).length === 0, () => 'the job is still listed');
  check(f.dev.node === f.src, () => `the device is on ${f.dev.node.nodeName}, not back on src`);
  check(!f.layer.graph.list().some((n) => n.driver.name === 'copy-before-write'), () => 'the filter node is still there');
  check(f.src.hooks.beforeWrite.taps.length === 1, () => 'copy-before-write still intercepts the source');
}

export async function checkSourceIsModel(f: BackupFixture, model: Buffer): Promise<void> {
  const source = await readAll(f.src);
  check(source.equals(model), () => `the source does not hold exactly the guest's changes (first difference at ${firstDifference(source, model)})`);
}
