/**
 * Property tests of backup's point-in-time guarantee (reference §3.3–3.7,
 * iotest 056): a slow or paused backup of a memory source while the guest
 * writes, write-zeroes and discards through the device — overlapping,
 * unaligned, several at once, some while the job is paused, some racing
 * with the start of the job, some racing with its cancel.
 *
 * - sync=full / top (a node without backing: top is full), completed: the
 *   target is the source as it was at the point in time, byte for byte;
 *   BLOCK_JOB_COMPLETED has offset == len == the disk size.
 * - sync=full, cancelled part-way: every target cluster the job wrote holds
 *   the point-in-time data, every other one its initial content.
 * - sync=none (ended by cancel): every cluster the guest touched holds the
 *   source's old data on the target, every other cluster its initial target
 *   content; BLOCK_JOB_CANCELLED's offset is the bytes of the distinct
 *   clusters copy-before-write copied.
 * - Always: every guest request succeeds and the source ends with exactly
 *   the guest's changes; the backup never writes to its source; no target
 *   cluster is written twice; source clusters reading as zeroes are never
 *   written to the target as data; the job and its filter are gone at the end.
 *
 * The job starts at speed 1 byte/s: one chunk goes at once (the rate
 * limiter's first burst), then it sleeps until `block-job-set-speed`; the
 * generated steps throttle, unthrottle, pause, resume and let the event
 * loop turn, so copy-before-write meets the background copy at every stage.
 * Nothing depends on wall-clock time. BACKUP_PROPERTY_RUNS=n multiplies
 * the number of runs.
 */
import test from 'ava';
import fc from 'fast-check';
import { type BackupFixture, CLUSTER, clusterBytes, clustersOf, readAll, ticks, writesPerCluster, zeroClusters } from './backup-fixture.js';
import {
  backupArgs,
  cancelJob,
  check,
  checkJobGone,
  checkSourceIsModel,
  finishJob,
  firstDifference,
  prepare,
  runBatch,
  runEnding,
  runSteps,
  type Scenario,
  scenarioArb,
  stats,
  takeStats,
} from './backup-scenario.js';
import { describeOp, type GuestOp, isSomeOrder, issue, matchRequests, overlapGroups, resolveOp, span } from './guest-io-model.js';

const scale = Number(process.env.BACKUP_PROPERTY_RUNS ?? 1);
const runs = (n: number): number => Math.max(1, Math.round(n * scale));

/** Zero source clusters are never written to the target as data, and no target cluster is written twice. */
function checkTargetRequests(f: BackupFixture, srcZeroAtStart: readonly boolean[], exempt: ReadonlySet<number>): void {
  for (const [cluster, count] of writesPerCluster(f.tgtRequests)) {
    check(count === 1, () => `target cluster ${cluster} was written ${count} times`);
  }
  for (const r of f.tgtRequests) {
    const zeroSource = clustersOf(r.offset, r.bytes).filter((c) => srcZeroAtStart[c] === true && !exempt.has(c));
    check(r.kind !== 'write' || zeroSource.length === 0, () => `clusters ${zeroSource.join(',')} read as zeroes but were written as data`);
  }
}

/**
 * Writes racing with blockdev-backup: those that reached the source before
 * copy-before-write was in place are part of the point in time.
 */
async function startRacing(f: BackupFixture, model: Buffer, s: Scenario, size: number, sync: string): Promise<GuestOp[]> {
  const seen = new Set<string>();
  const race = s.race.flatMap(({ op, turns }) => {
    const resolved = resolveOp(op, size);
    const key = resolved === undefined ? '' : `${resolved.kind}:${resolved.offset}:${resolved.bytes}`;
    if (resolved === undefined || seen.has(key)) return [];
    seen.add(key);
    return [{ op: resolved, turns }];
  });
  const ops = race.map((r) => r.op);
  const turnsOf = new Map(race.map((r) => [r.op, r.turns]));
  const start = f.layer.execute('blockdev-backup', backupArgs(s, sync));
  await runBatch(f, model, ops, start.then(() => undefined), async (op) => {
    await ticks(turnsOf.get(op)!);
    await issue(f.dev, op);
  });
  const { reached } = matchRequests(ops, f.srcRequests);
  const before = ops.filter((_, i) => reached[i] !== undefined && !reached[i]!.intercepted);
  stats.racingBeforePointInTime += before.length;
  stats.racingAfterPointInTime += reached.filter((r) => r?.intercepted === true).length;
  return before;
}

async function fullBackupProperty(s: Scenario, sync: 'full' | 'top'): Promise<void> {
  const { f, size, srcStart, tgtStart } = await prepare(s);
  try {
    const srcZeroAtStart = await zeroClusters(f.src);
    const model = Buffer.from(srcStart);
    const beforeJob = await startRacing(f, model, s, size, sync);
    await runSteps(f, model, s, size);
    await runEnding(f, model, s, size, () => finishJob(f));
    const end = await f.event(['BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED']);
    stats.runs++;
    await checkJobGone(f);
    await checkSourceIsModel(f, model);
    const racedClusters = new Set(beforeJob.flatMap((op) => clustersOf(op.offset, op.bytes)));
    checkTargetRequests(f, srcZeroAtStart, racedClusters);
    const target = await readAll(f.tgt);

    if (end.event === 'BLOCK_JOB_COMPLETED') {
      stats.completed++;
      check(end.data?.error === undefined, () => `the job failed: ${String(end.data?.error)}`);
      check(end.data?.len === size && end.data.offset === size, () => `COMPLETED ${JSON.stringify(end.data)} for a disk of ${size}`);
      // The target is the source at the point in time: its start content plus the racing writes that got in before it.
      const pointInTime = Buffer.from(srcStart);
      for (const group of overlapGroups(beforeJob)) {
        const { start, end: stop } = span(group);
        check(
          isSomeOrder(target.subarray(start, stop), srcStart.subarray(start, stop), start, group),
          () => `target is not the source at the point in time around the racing writes [${group.map(describeOp).join(', ')}]`,
        );
        target.copy(pointInTime, start, start, stop);
      }
      check(target.equals(pointInTime), () => `target differs from the source at job start at byte ${firstDifference(target, pointInTime)}`);
      // Block status follows the source's: zero clusters (the short last one too, zero-tail.test.ts) stay zero, data is data.
      const tgtZero = await zeroClusters(f.tgt);
      srcZeroAtStart.forEach((zero, c) => {
        if (racedClusters.has(c)) return;
        check(tgtZero[c] === zero, () => `target cluster ${c} should read as ${zero ? 'zeroes' : 'data'} by block status`);
      });
    } else {
      stats.cancelled++;
      // A partial copy: what the job wrote is point-in-time data, the rest is untouched.
      const written = new Set(writesPerCluster(f.tgtRequests).keys());
      const offset = end.data?.offset as number;
      check(
        end.data?.len === size && offset >= clusterBytes(written, size) && offset <= size,
        () => `CANCELLED ${JSON.stringify(end.data)} after writing ${written.size} clusters of a disk of ${size}`,
      );
      for (let c = 0; c * CLUSTER < size; c++) {
        if (racedClusters.has(c)) continue;
        const range = [c * CLUSTER, Math.min(size, (c + 1) * CLUSTER)] as const;
        const expected = written.has(c) ? srcStart : tgtStart;
        check(target.subarray(...range).equals(expected.subarray(...range)), () => {
          return `target cluster ${c} differs from its ${written.has(c) ? 'point-in-time data' : 'initial content'}`;
        });
      }
    }
  } finally {
    await f.dispose();
  }
}

async function noneBackupProperty(s: Scenario): Promise<void> {
  const { f, size, srcStart, tgtStart } = await prepare(s);
  try {
    const srcZeroAtStart = await zeroClusters(f.src);
    const tgtZeroAtStart = await zeroClusters(f.tgt);
    const model = Buffer.from(srcStart);
    await f.layer.execute('blockdev-backup', backupArgs(s, 'none'));
    await runSteps(f, model, s, size);
    await runEnding(f, model, s, size, () => cancelJob(f));
    const cancelled = await f.event('BLOCK_JOB_CANCELLED');
    stats.runs++;
    stats.cancelled++;
    await checkJobGone(f);
    await checkSourceIsModel(f, model);
    checkTargetRequests(f, srcZeroAtStart, new Set());

    const intercepted = f.srcRequests.filter((r) => r.intercepted);
    stats.cbwRequests += intercepted.length;
    const touched = new Set(intercepted.flatMap((r) => clustersOf(r.offset, r.bytes)));
    const expectedOffset = clusterBytes(touched, size);
    check(
      cancelled.data?.offset === expectedOffset && cancelled.data.len === size,
      () => `CANCELLED ${JSON.stringify(cancelled.data)}, expected offset ${expectedOffset} (${touched.size} clusters) and len ${size}`,
    );
    const written = writesPerCluster(f.tgtRequests);
    for (const cluster of written.keys()) check(touched.has(cluster), () => `untouched target cluster ${cluster} was written`);
    const target = await readAll(f.tgt);
    const tgtZero = await zeroClusters(f.tgt);
    for (let c = 0; c * CLUSTER < size; c++) {
      const range = [c * CLUSTER, Math.min(size, (c + 1) * CLUSTER)] as const;
      const expected = touched.has(c) ? srcStart : tgtStart;
      check(target.subarray(...range).equals(expected.subarray(...range)), () => {
        return `target cluster ${c} (${touched.has(c) ? 'touched: old source data' : 'untouched: initial target'} expected) differs`;
      });
      // Block status follows the content's origin: zero where the old source data (or the untouched target) was zero.
      const expectZero = touched.has(c) ? srcZeroAtStart[c] : tgtZeroAtStart[c];
      check(tgtZero[c] === expectZero, () => `target cluster ${c} should read as ${expectZero ? 'zeroes' : 'data'} by block status`);
    }
  } finally {
    await f.dispose();
  }
}

async function property(t: { log(...values: unknown[]): void; pass(): void }, arb: fc.Arbitrary<Scenario>, numRuns: number, run: (s: Scenario) => Promise<void>): Promise<void> {
  await fc.assert(fc.asyncProperty(arb, run), { numRuns: runs(numRuns), includeErrorInReport: true });
  t.log(takeStats());
  t.pass();
}

test.serial('sync=full: the target is the source at the point in time, whatever the guest does', async (t) => {
  await property(t, scenarioArb({ race: true, cancel: fc.constant(false) }), 50, (s) => fullBackupProperty(s, 'full'));
});

test.serial('sync=full cancelled part-way: what was copied is point-in-time data, the rest untouched', async (t) => {
  await property(t, scenarioArb({ race: true, cancel: fc.constant(true) }), 20, (s) => fullBackupProperty(s, 'full'));
});

test.serial('sync=top on a node without backing behaves as full', async (t) => {
  await property(t, scenarioArb({ race: true, cancel: fc.constant(false) }), 20, (s) => fullBackupProperty(s, 'top'));
});

test.serial('sync=none: the target holds the old data of exactly the clusters the guest touched', async (t) => {
  await property(t, scenarioArb({ race: false, cancel: fc.boolean() }), 60, (s) => noneBackupProperty(s));
});
