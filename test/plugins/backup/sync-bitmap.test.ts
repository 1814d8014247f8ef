/**
 * Backups with a dirty bitmap, the points QEMU's transcript (s8, replayed
 * by bitmap-transcripts.test.ts) does not show (reference §7.2): bitmaps of
 * another granularity than backup's clusters, guest writes during the job
 * (copied before they land if the bitmap marked the cluster, recorded by the
 * successor either way), the bitmap busy while the job runs, what a failed
 * job leaves with each bitmap-mode, and transactions that abort or a group
 * that fails, after which every bitmap is as it was (iotest 124's
 * all-or-nothing).
 */
import test from 'ava';
import type { BitmapStore } from '../../../core/bitmap/bitmap-store.js';
import { BlockIoError } from '../../../core/errors.js';
import { TOKENS } from '../../../core/tokens.js';
import { type BackupFixture, backupFixture, CLUSTER, clustersOf, fillRandom, JOB, readAll, writesPerCluster } from './backup-fixture.js';

const SIZE = 64 * CLUSTER; // 4 MiB
const BUSY = "Bitmap 'b0' is currently in use by another operation and cannot be used";

interface Info {
  name?: string;
  count: number;
  granularity: number;
  recording: boolean;
  busy: boolean;
}

/** `src` has data in every cluster (`density` 100), so that every cluster a backup copies is a write on the target. */
async function setup(density = 60): Promise<{ f: BackupFixture; store: BitmapStore; bitmaps: () => Promise<Info[]> }> {
  const f = await backupFixture(SIZE, ['dirty-bitmap', 'qmp-block-commands', 'abort']);
  await fillRandom(f.src, 77, density);
  f.recordTarget();
  const bitmaps = async (): Promise<Info[]> => {
    const nodes = await f.layer.execute<{ 'node-name': string; 'dirty-bitmaps'?: Info[] }[]>('query-named-block-nodes', { flat: true });
    return nodes.find((n) => n['node-name'] === 'src')?.['dirty-bitmaps'] ?? [];
  };
  return { f, store: f.layer.container.get<BitmapStore>(TOKENS.BitmapStore), bitmaps };
}

/** The clusters of `src` b0 marks dirty. */
function dirtyClusters(store: BitmapStore, f: BackupFixture, name = 'b0'): number[] {
  const bitmap = store.find(f.src, name)!;
  return [...bitmap.dirtyAreas(0, SIZE)].flatMap((a) => clustersOf(a.offset, a.length));
}

/** Clusters the target received successfully. */
function copiedClusters(f: BackupFixture): Set<number> {
  const copied = new Set<number>();
  f.tgt.hooks.afterWrite.tap('copied', (request, result) => {
    if (result.error === undefined) for (const c of clustersOf(request.offset, request.bytes)) copied.add(c);
  });
  return copied;
}

/** The target's writes to clusters at and after `first` fail with EIO. */
function failTargetFrom(f: BackupFixture, first: number): void {
  f.tgt.hooks.beforeWrite.tapPromise('fail', async (request) =>
    request.offset + request.bytes > first * CLUSTER ? new BlockIoError('EIO') : undefined,
  );
}

test('sync=bitmap copies every cluster a 4 KiB-granule bitmap touches; guest writes during the job go to the successor', async (t) => {
  const { f, store, bitmaps } = await setup();
  try {
    await f.layer.execute('block-dirty-bitmap-add', { node: 'src', name: 'b0', granularity: 4096 });
    await f.dev.write(3 * CLUSTER + 10, Buffer.alloc(100, 1));
    await f.dev.write(10 * CLUSTER + 60 * 1024, Buffer.alloc(8192, 2)); // clusters 10 and 11
    const before = await readAll(f.src);
    await f.layer.execute('blockdev-backup', { 'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'incremental', bitmap: 'b0', speed: 1 });
    t.deepEqual(
      (await bitmaps()).map((b) => [b.name ?? '(anonymous)', b.count, b.granularity, b.recording, b.busy]),
      [
        // The job's copy bitmap, at backup's cluster size: 3 clusters, less the rate limiter's first burst.
        ['(anonymous)', 2 * CLUSTER, CLUSTER, false, false],
        ['(anonymous)', 0, 4096, true, false], // the successor
        ['b0', 3 * 4096, 4096, true, true], // frozen: 100 bytes and 8 KiB across a cluster boundary
      ],
    );
    await f.dev.write(10 * CLUSTER, Buffer.alloc(512, 3)); // marked in b0: its old data is copied first
    await f.dev.write(20 * CLUSTER, Buffer.alloc(512, 4)); // not marked: not copied
    await f.layer.execute('block-job-set-speed', { device: JOB, speed: 0 });
    t.like((await f.event('BLOCK_JOB_COMPLETED')).data, { len: 3 * CLUSTER, offset: 3 * CLUSTER });
    t.deepEqual([...writesPerCluster(f.tgtRequests)].sort((a, b) => a[0] - b[0]), [[3, 1], [10, 1], [11, 1]], 'each marked cluster copied once, nothing else');
    const target = await readAll(f.tgt);
    for (const c of [3, 10, 11]) t.true(target.subarray(c * CLUSTER, (c + 1) * CLUSTER).equals(before.subarray(c * CLUSTER, (c + 1) * CLUSTER)));
    t.deepEqual(await bitmaps(), [{ name: 'b0', count: 2 * 4096, granularity: 4096, recording: true, busy: false, persistent: false }]);
    t.deepEqual(dirtyClusters(store, f), [10, 20], 'b0 now holds what was written during the job');
  } finally {
    await f.dispose();
  }
});

test('a bitmap with granules larger than a cluster: every cluster of a dirty granule is copied', async (t) => {
  const { f } = await setup(100);
  try {
    await f.layer.execute('block-dirty-bitmap-add', { node: 'src', name: 'b0', granularity: 1 << 20 });
    await f.dev.write(2 * (1 << 20) + 5, Buffer.alloc(1, 9));
    await f.layer.execute('blockdev-backup', { 'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'bitmap', bitmap: 'b0', 'bitmap-mode': 'never' });
    t.like((await f.event('BLOCK_JOB_COMPLETED')).data, { len: 1 << 20, offset: 1 << 20 });
    t.deepEqual([...writesPerCluster(f.tgtRequests).keys()].sort((a, b) => a - b), Array.from({ length: 16 }, (_, i) => 32 + i));
  } finally {
    await f.dispose();
  }
});

test('the bitmap is busy while the job runs: no change to it, no second job on it; usable again afterwards', async (t) => {
  const { f, bitmaps } = await setup();
  try {
    await f.layer.execute('block-dirty-bitmap-add', { node: 'src', name: 'b0' });
    await f.layer.execute('block-dirty-bitmap-add', { node: 'src', name: 'other' });
    await f.dev.write(0, Buffer.alloc(CLUSTER, 1));
    await f.dev.write(5 * CLUSTER, Buffer.alloc(CLUSTER, 1));
    await f.layer.execute('blockdev-backup', { 'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'incremental', bitmap: 'b0', speed: 1 });
    for (const command of ['remove', 'clear', 'enable', 'disable']) {
      await t.throwsAsync(f.layer.execute(`block-dirty-bitmap-${command}`, { node: 'src', name: 'b0' }), { message: BUSY }, command);
    }
    await t.throwsAsync(f.layer.execute('block-dirty-bitmap-merge', { node: 'src', target: 'b0', bitmaps: ['other'] }), { message: BUSY });
    const tgt2 = await f.layer.graph.add({ driver: 'memory', 'node-name': 'tgt2', size: SIZE });
    // By node name: the device now shows the job's filter, which has no bitmaps (as in QEMU).
    await t.throwsAsync(
      f.layer.execute('blockdev-backup', { 'job-id': 'j2', device: 'src', target: 'tgt2', sync: 'incremental', bitmap: 'b0' }),
      { message: BUSY },
    );
    t.is(tgt2.parents.size, 0, 'the refused job left nothing behind');
    await f.layer.execute('block-job-set-speed', { device: JOB, speed: 0 });
    await f.event('BLOCK_JOB_COMPLETED');
    await f.layer.execute('block-dirty-bitmap-disable', { node: 'src', name: 'b0' });
    await f.layer.execute('block-dirty-bitmap-remove', { node: 'src', name: 'b0' });
    t.deepEqual((await bitmaps()).map((b) => b.name), ['other']);
  } finally {
    await f.dispose();
  }
});

for (const [mode, expected] of [
  ['always', 'what the job did not copy, and the writes made during it'],
  ['on-success', 'what it had, and the writes made during it'],
] as const) {
  test(`a failed full backup with bitmap-mode ${mode} leaves the bitmap with ${expected}`, async (t) => {
    const { f, store } = await setup(100);
    try {
      await f.layer.execute('block-dirty-bitmap-add', { node: 'src', name: 'b0' });
      await f.dev.write(40 * CLUSTER, Buffer.alloc(CLUSTER, 1));
      await f.dev.write(50 * CLUSTER, Buffer.alloc(CLUSTER, 1));
      const copied = copiedClusters(f);
      failTargetFrom(f, 32);
      await f.layer.execute('blockdev-backup', {
        'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'full', bitmap: 'b0', 'bitmap-mode': mode, speed: 1,
      });
      await f.dev.write(2 * CLUSTER, Buffer.alloc(512, 7)); // during the job
      await f.layer.execute('block-job-set-speed', { device: JOB, speed: 0 });
      const completed = await f.event('BLOCK_JOB_COMPLETED');
      t.is(completed.data?.error, 'Input/output error');
      const notCopied = Array.from({ length: 64 }, (_, c) => c).filter((c) => !copied.has(c));
      t.true(notCopied.includes(32) && !notCopied.includes(0), 'the job failed part-way');
      const dirty = dirtyClusters(store, f);
      if (mode === 'always') t.deepEqual(dirty, [...new Set([2, ...notCopied])].sort((a, b) => a - b));
      else t.deepEqual(dirty, [2, 40, 50]);
      t.false(store.find(f.src, 'b0')!.busy);
    } finally {
      await f.dispose();
    }
  });
}

test('a transaction that aborts leaves the bitmap as it was, recording, with no successor', async (t) => {
  const { f, bitmaps } = await setup();
  try {
    await f.layer.execute('block-dirty-bitmap-add', { node: 'src', name: 'b0' });
    await f.dev.write(7 * CLUSTER, Buffer.alloc(10, 1));
    await t.throwsAsync(
      f.layer.execute('transaction', {
        actions: [
          { type: 'blockdev-backup', data: { 'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'incremental', bitmap: 'b0' } },
          { type: 'abort', data: {} },
        ],
      }),
      { message: 'Transaction aborted using Abort action' },
    );
    t.deepEqual(await bitmaps(), [{ name: 'b0', count: CLUSTER, granularity: CLUSTER, recording: true, busy: false, persistent: false }]);
    await f.dev.write(9 * CLUSTER, Buffer.alloc(10, 1));
    t.is((await bitmaps())[0]?.count, 2 * CLUSTER, 'b0 records again');
  } finally {
    await f.dispose();
  }
});

test('a grouped transaction of two incremental backups that fails leaves both bitmaps whole', async (t) => {
  const { f, store } = await setup();
  try {
    const tgt2 = await f.layer.graph.add({ driver: 'memory', 'node-name': 'tgt2', size: SIZE });
    tgt2.hooks.beforeWrite.tapPromise('fail', async () => new BlockIoError('EIO'));
    for (const name of ['b0', 'b1']) await f.layer.execute('block-dirty-bitmap-add', { node: 'src', name });
    await f.dev.write(4 * CLUSTER, Buffer.alloc(CLUSTER, 1));
    await f.layer.execute('transaction', {
      actions: [
        { type: 'blockdev-backup', data: { 'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'incremental', bitmap: 'b0', speed: 1 } },
        // By node name: the device now shows the first backup's filter, which has no bitmaps (as in QEMU).
        { type: 'blockdev-backup', data: { 'job-id': 'j2', device: 'src', target: 'tgt2', sync: 'incremental', bitmap: 'b1' } },
      ],
      properties: { 'completion-mode': 'grouped' },
    });
    t.is((await f.event('BLOCK_JOB_CANCELLED')).data?.device, JOB, 'the job that did not fail is cancelled with the group');
    for (const name of ['b0', 'b1']) {
      t.deepEqual(dirtyClusters(store, f, name), [4], `${name} still marks what neither backup kept`);
      t.false(store.find(f.src, name)!.busy);
    }
    t.is(store.list(f.src).length, 2, 'no successor or copy bitmap left');
  } finally {
    await f.dispose();
  }
});

test('a backup without a bitmap lists its copy bitmap but puts no tap on the guest\'s write path', async (t) => {
  const { f, bitmaps } = await setup();
  try {
    await f.layer.execute('blockdev-backup', { 'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'full', speed: 1 });
    t.deepEqual((await bitmaps()).map((b) => [b.name ?? '(anonymous)', b.recording]), [['(anonymous)', false]]);
    t.false(f.src.hooks.afterWrite.taps.some((tap) => tap.name === 'BitmapStore'), 'no bitmap records, so nothing taps the writes');
    await f.layer.execute('block-dirty-bitmap-add', { node: 'src', name: 'b0' });
    t.true(f.src.hooks.afterWrite.taps.some((tap) => tap.name === 'BitmapStore'), 'a bitmap that records does');
    await f.layer.execute('block-job-set-speed', { device: JOB, speed: 0 });
    await f.event('BLOCK_JOB_COMPLETED');
    t.deepEqual((await bitmaps()).map((b) => b.name), ['b0']);
  } finally {
    await f.dispose();
  }
});
