/**
 * Focused tests of copy-before-write and the backup job's verbs, after
 * iotests 055 and 056 (reference §3.4–3.7, §8): each cluster is copied
 * once, concurrent writes share one copy, copy-before-write works while the
 * job is paused, cancel leaves the source alone, pause freezes `offset`,
 * and zero ranges never become data on the target.
 */
import test from 'ava';
import {
  type BackupFixture,
  backupFixture,
  CLUSTER,
  clustersOf,
  delay,
  fillRandom,
  JOB,
  randomBytes,
  readAll,
  ticks,
  writesPerCluster,
  zeroClusters,
} from './backup-fixture.js';
import { isSomeOrder } from './guest-io-model.js';

const SIZE = 64 * CLUSTER; // 4 MiB

interface BlockJobInfo {
  device: string;
  len: number;
  offset: number;
  busy: boolean;
  paused: boolean;
  speed: number;
  status: string;
}

async function queryJob(f: BackupFixture): Promise<BlockJobInfo | undefined> {
  const jobs = await f.layer.execute<BlockJobInfo[]>('query-block-jobs');
  return jobs.find((j) => j.device === JOB);
}

/** Polls (event-loop turns, then short sleeps) until `condition` holds. */
async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let turn = 0; !(await condition()); turn++) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    if (turn < 100) await ticks(1);
    else await delay(5);
  }
}

/** A source full of data, a fresh target, the target's writes recorded. */
async function fullSource(size = SIZE): Promise<{ f: BackupFixture; original: Buffer }> {
  const f = await backupFixture(size);
  await fillRandom(f.src, 1234, 100);
  f.srcRequests.length = 0;
  f.recordTarget();
  return { f, original: await readAll(f.src) };
}

function cluster(buf: Buffer, c: number): Buffer {
  return buf.subarray(c * CLUSTER, (c + 1) * CLUSTER);
}

function targetWritesTo(f: BackupFixture, c: number): number {
  return writesPerCluster(f.tgtRequests).get(c) ?? 0;
}

async function finish(f: BackupFixture): Promise<Record<string, unknown>> {
  await f.layer.execute('block-job-set-speed', { device: JOB, speed: 0 });
  const completed = await f.event('BLOCK_JOB_COMPLETED');
  return completed.data ?? {};
}

test('a cluster already copied is not copied again; adjacent clusters are copied one by one (056)', async (t) => {
  const { f, original } = await fullSource();
  try {
    // speed 1: the rate limiter's first burst copies cluster 0, then the job sleeps.
    await f.layer.execute('blockdev-backup', {
      'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'full', speed: 1, 'x-perf': { 'max-chunk': CLUSTER },
    });
    await until(() => f.tgtRequests.length === 1, 'the first burst');
    t.deepEqual(f.tgtRequests.map((r) => [r.offset, r.bytes]), [[0, CLUSTER]]);

    await f.dev.write(100, Buffer.alloc(10, 0xaa)); // cluster 0: copied by the background burst
    await f.dev.write(5 * CLUSTER + 7, Buffer.alloc(300, 0xbb));
    await f.dev.write(5 * CLUSTER + 4000, Buffer.alloc(300, 0xcc)); // cluster 5 again
    await f.dev.write(7 * CLUSTER + 1000, Buffer.alloc(CLUSTER, 0xdd)); // straddles clusters 7 and 8
    t.is(targetWritesTo(f, 0), 1, 'cluster 0 is not copied a second time');
    t.is(targetWritesTo(f, 5), 1, 'cluster 5 is copied once for two writes');
    t.deepEqual(
      f.tgtRequests.slice(1).map((r) => [r.kind, r.offset / CLUSTER, r.bytes]),
      [['write', 5, CLUSTER], ['write', 7, CLUSTER], ['write', 8, CLUSTER]],
      'each cluster of a write spanning two is copied on its own, only those',
    );
    t.is((await queryJob(f))?.offset, 4 * CLUSTER, 'the burst and three copy-before-write clusters count as progress');

    const completed = await finish(f);
    t.like(completed, { len: SIZE, offset: SIZE });
    t.true((await readAll(f.tgt)).equals(original), 'the target is the source at the start');
    t.true([...writesPerCluster(f.tgtRequests).values()].every((n) => n === 1), 'every cluster was written exactly once');
    t.is(writesPerCluster(f.tgtRequests).size, 64);
  } finally {
    await f.dispose();
  }
});

test('concurrent guest writes to one cluster wait for a single copy of it (056)', async (t) => {
  const { f, original } = await fullSource();
  try {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    f.tgt.hooks.beforeWrite.tapPromise('gate', async (r) => {
      if (clustersOf(r.offset, r.bytes).includes(9)) await gate;
      return undefined;
    });
    await f.layer.execute('blockdev-backup', { 'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'none' });
    const writes = [
      { at: 9 * CLUSTER + 10, data: randomBytes(1, 5000) },
      { at: 9 * CLUSTER + 2000, data: randomBytes(2, 100) }, // overlaps the first
      { at: 9 * CLUSTER + 60_000, data: randomBytes(3, 5536) }, // ends at the cluster's end
    ];
    const settled: boolean[] = [false, false, false];
    const pending = writes.map((w, i) => f.dev.write(w.at, w.data).then(() => (settled[i] = true)));
    await ticks(20);
    t.deepEqual(settled, [false, false, false], 'every write waits for the copy');
    t.is(targetWritesTo(f, 9), 1, 'one copy is under way for all three');
    t.true(cluster(await readAll(f.src), 9).equals(cluster(original, 9)), 'the source is untouched while the copy runs');

    release();
    await Promise.all(pending);
    t.is(targetWritesTo(f, 9), 1, 'still a single copy');
    t.true(cluster(await readAll(f.tgt), 9).equals(cluster(original, 9)), 'the target has the old data');
    // Concurrent overlapping writes may land in any order (as in QEMU); each lands whole.
    const ops = writes.map((w) => ({ kind: 'write' as const, offset: w.at, bytes: w.data.length, data: w.data }));
    t.true(isSomeOrder(cluster(await readAll(f.src), 9), cluster(original, 9), 9 * CLUSTER, ops), 'every write landed');
    t.is((await queryJob(f))?.offset, CLUSTER);

    await f.layer.execute('block-job-cancel', { device: JOB });
    t.like((await f.event('BLOCK_JOB_CANCELLED')).data, { type: 'backup', offset: CLUSTER, len: SIZE });
  } finally {
    await f.dispose();
  }
});

test('a guest write to an uncopied cluster while the job is paused is still copied first (056)', async (t) => {
  const { f, original } = await fullSource();
  try {
    await f.layer.execute('blockdev-backup', {
      'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'full', speed: 1, 'x-perf': { 'max-chunk': CLUSTER },
    });
    await f.layer.execute('block-job-pause', { device: JOB });
    await until(async () => (await queryJob(f))?.status === 'paused', 'status paused');
    const before = (await queryJob(f))!;
    t.true(before.paused);

    await f.dev.write(20 * CLUSTER + 123, Buffer.alloc(1000, 0xee));
    const during = (await queryJob(f))!;
    t.is(during.status, 'paused', 'the write does not resume the job');
    t.is(during.offset, before.offset + CLUSTER, 'the copy-before-write counts as progress');
    t.true(cluster(await readAll(f.tgt), 20).equals(cluster(original, 20)), 'cluster 20 was copied before the write');
    t.is(targetWritesTo(f, 20), 1);

    await f.layer.execute('block-job-resume', { device: JOB });
    t.like(await finish(f), { len: SIZE, offset: SIZE });
    t.true((await readAll(f.tgt)).equals(original));
    t.is(targetWritesTo(f, 20), 1, 'the background copy skipped cluster 20');
  } finally {
    await f.dispose();
  }
});

for (const how of ['block-job-cancel', 'job-cancel in a transaction-started job'] as const) {
  test(`cancel leaves the source unchanged and the job gone (055, ${how})`, async (t) => {
    const { f, original } = await fullSource();
    try {
      const args = { 'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'full', speed: 1 };
      if (how === 'block-job-cancel') await f.layer.execute('blockdev-backup', args);
      else await f.layer.execute('transaction', { actions: [{ type: 'blockdev-backup', data: args }] });
      await until(() => f.tgtRequests.length > 0, 'the first burst');
      const since = f.events.length;
      if (how === 'block-job-cancel') await f.layer.execute('block-job-cancel', { device: JOB });
      else await f.layer.execute('job-cancel', { id: JOB });

      const cancelled = (await f.event('BLOCK_JOB_CANCELLED')).data!;
      t.like(cancelled, { type: 'backup', device: JOB, len: SIZE });
      t.true((cancelled.offset as number) < SIZE, 'cancelled part-way');
      t.deepEqual(
        f.events.slice(since).map((e) => (e.event === 'JOB_STATUS_CHANGE' ? e.data?.status : e.event)),
        ['aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null'],
      );
      t.deepEqual(await f.layer.execute('query-block-jobs'), []);
      t.deepEqual(await f.layer.execute('query-jobs'), []);
      t.is(f.dev.node, f.src, 'the device is back on the source');
      t.false(f.layer.graph.list().some((n) => n.driver.name === 'copy-before-write'), 'the filter is gone');
      t.true((await readAll(f.src)).equals(original), 'the source is unchanged');
      t.deepEqual(f.srcRequests, [], 'the backup never wrote to its source');

      const copied = f.tgtRequests.length;
      await f.dev.write(30 * CLUSTER, Buffer.alloc(CLUSTER, 1));
      t.is(f.tgtRequests.length, copied, 'guest writes are no longer copied');
    } finally {
      await f.dispose();
    }
  });
}

test('pause holds offset constant; resume completes and the images compare equal (055)', async (t) => {
  const size = 128 * CLUSTER; // 8 MiB
  const { f, original } = await fullSource(size);
  try {
    // 2 MiB/s in 64 KiB chunks: about 200 KiB per 100 ms slice.
    await f.layer.execute('blockdev-backup', {
      'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'full', speed: 2 << 20, 'x-perf': { 'max-chunk': CLUSTER },
    });
    const first = (await queryJob(f))!.offset;
    await until(async () => (await queryJob(f))!.offset > first + 2 * CLUSTER, 'progress while running');

    await f.layer.execute('block-job-pause', { device: JOB });
    await until(async () => (await queryJob(f))?.status === 'paused', 'status paused');
    const a = (await queryJob(f))!;
    await delay(200);
    const b = (await queryJob(f))!;
    t.like(a, { paused: true, busy: false, status: 'paused' });
    t.like(b, { paused: true, busy: false, status: 'paused' });
    t.is(b.offset, a.offset, 'offset does not move while paused');
    t.true(a.offset < size);

    await f.layer.execute('block-job-resume', { device: JOB });
    t.like(await finish(f), { len: size, offset: size });
    t.true((await readAll(f.tgt)).equals(original), 'the images compare equal');
  } finally {
    await f.dispose();
  }
});

test('zero ranges of the source are never written to the target as data', async (t) => {
  const f = await backupFixture(SIZE);
  try {
    const dataClusters = [0, 1, 2, 3, 10, 20, 21, 22];
    for (const c of dataClusters) await f.src.write(c * CLUSTER, randomBytes(c, CLUSTER));
    await f.src.write(30 * CLUSTER + 100, randomBytes(30, 50)); // a page holding a little data
    dataClusters.push(30);
    for (const c of [40, 41]) await f.tgt.write(c * CLUSTER, randomBytes(100 + c, CLUSTER)); // stale target data
    f.srcRequests.length = 0;
    f.recordTarget();
    const original = await readAll(f.src);

    await f.layer.execute('blockdev-backup', {
      'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'full', speed: 1, 'x-perf': { 'max-chunk': CLUSTER },
    });
    // Copy-before-write of zero clusters, one the target already reads as zeroes and one it does not.
    await f.dev.write(50 * CLUSTER + 5, Buffer.alloc(10, 1));
    await f.dev.write(41 * CLUSTER + 5, Buffer.alloc(10, 1));
    t.like(await finish(f), { len: SIZE, offset: SIZE });

    t.true((await readAll(f.tgt)).equals(original));
    const written = f.tgtRequests.filter((r) => r.kind === 'write').flatMap((r) => clustersOf(r.offset, r.bytes));
    t.deepEqual([...new Set(written)].sort((x, y) => x - y), dataClusters, 'data is written only where the source has data');
    const zeroed = f.tgtRequests.filter((r) => r.kind === 'write-zeroes').flatMap((r) => clustersOf(r.offset, r.bytes));
    t.deepEqual([...new Set(zeroed)].sort((x, y) => x - y), [40, 41], 'stale target data is zeroed, nothing else');
    const zero = await zeroClusters(f.tgt);
    zero.forEach((isZero, c) => t.is(isZero, !dataClusters.includes(c), `block status of target cluster ${c}`));
  } finally {
    await f.dispose();
  }
});

test('a guest discard during a backup stops at the copy-before-write filter, as in QEMU 7.2', async (t) => {
  // QEMU inserts the filter with BDRV_O_RDWR only (bdrv_cbw_append), so its
  // bdrv_co_pdiscard returns at "Do nothing if disabled": the discard
  // neither reaches the source nor triggers a copy.
  const { f, original } = await fullSource();
  try {
    await f.layer.execute('blockdev-backup', { 'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'none' });
    await f.dev.discard(12 * CLUSTER, 2 * CLUSTER);
    t.deepEqual(f.srcRequests, []);
    t.deepEqual(f.tgtRequests, []);
    t.true((await readAll(f.src)).equals(original));
    await f.layer.execute('block-job-cancel', { device: JOB });
    await f.event('BLOCK_JOB_CANCELLED');
    await f.dev.discard(12 * CLUSTER, 2 * CLUSTER);
    t.true((await readAll(f.src, 12 * CLUSTER, 2 * CLUSTER)).equals(Buffer.alloc(2 * CLUSTER)), 'without the filter it reaches the source');
  } finally {
    await f.dispose();
  }
});

for (const first of ['a', 'b'] as const) {
  test(`two backups of one source each keep their own point in time (${first} ends first)`, async (t) => {
    const { f, original } = await fullSource();
    try {
      const tgt2 = await f.layer.graph.add({ driver: 'memory', 'node-name': 'tgt2', size: SIZE });
      const slow = { sync: 'full', speed: 1, 'x-perf': { 'max-chunk': CLUSTER } };
      await f.layer.execute('blockdev-backup', { 'job-id': 'a', device: 'src', target: 'tgt', ...slow });
      await f.dev.write(3 * CLUSTER + 5, Buffer.alloc(CLUSTER, 0x11));
      const atB = await readAll(f.src);
      await f.layer.execute('blockdev-backup', { 'job-id': 'b', device: 'src', target: 'tgt2', ...slow });
      await f.dev.write(3 * CLUSTER + 100, Buffer.alloc(3 * CLUSTER, 0x22));
      for (const job of first === 'a' ? ['a', 'b'] : ['b', 'a']) {
        await f.layer.execute('block-job-set-speed', { device: job, speed: 0 });
        await until(() => f.events.some((e) => e.event === 'BLOCK_JOB_COMPLETED' && e.data?.device === job), `${job} to complete`);
        await f.dev.write(9 * CLUSTER + 100, Buffer.alloc(2 * CLUSTER, job === 'a' ? 0x33 : 0x44));
      }
      t.true((await readAll(f.tgt)).equals(original), 'backup a is the source when a started');
      t.true((await readAll(tgt2)).equals(atB), 'backup b is the source when b started');
      t.is(f.dev.node, f.src);
      t.deepEqual(f.layer.graph.list().map((n) => n.nodeName).sort(), ['src', 'tgt', 'tgt2']);
    } finally {
      await f.dispose();
    }
  });
}
