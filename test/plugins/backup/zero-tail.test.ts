/**
 * Zero ranges of the source stay zero on the target by block status — also
 * in the short last cluster of a disk whose size is not a multiple of the
 * cluster size, where the target held stale data.
 *
 * Regression test: point-in-time.test.ts found that the copy engine's
 * write-zeroes over that cluster left it reading as data, because the memory
 * driver dropped only pages a write-zeroes covered whole and the page behind
 * the last cluster never is (fixed in drivers/memory/sparse-pages.ts `zero`:
 * a page that becomes all zero is dropped).
 */
import test from 'ava';
import { backupFixture, CLUSTER, JOB, randomBytes, readAll, zeroClusters } from './backup-fixture.js';

const SIZE = 16 * CLUSTER + 1000;

test('write-zeroes over the short last cluster of a memory node leaves it reading as zeroes by block status', async (t) => {
  const f = await backupFixture(SIZE);
  try {
    await f.tgt.write(16 * CLUSTER, randomBytes(7, 1000));
    await f.tgt.writeZeroes(16 * CLUSTER, 1000, { mayUnmap: true });
    t.true((await readAll(f.tgt, 16 * CLUSTER)).equals(Buffer.alloc(1000)));
    t.deepEqual(await f.tgt.blockStatus(16 * CLUSTER, 1000), [
      { offset: 16 * CLUSTER, length: 1000, data: false, zero: true, allocated: true },
    ]);
  } finally {
    await f.dispose();
  }
});

test('a full backup leaves a zero last cluster zero on a target that held data there', async (t) => {
  const f = await backupFixture(SIZE);
  try {
    await f.src.write(0, randomBytes(1, CLUSTER));
    await f.tgt.write(16 * CLUSTER, randomBytes(2, 1000)); // stale data in the short last cluster
    f.recordTarget();
    await f.layer.execute('blockdev-backup', { 'job-id': JOB, device: 'virtio0', target: 'tgt', sync: 'full' });
    t.like((await f.event('BLOCK_JOB_COMPLETED')).data, { len: SIZE, offset: SIZE });
    t.true((await readAll(f.tgt)).equals(await readAll(f.src)), 'contents are right');
    t.deepEqual(
      f.tgtRequests.filter((r) => r.offset === 16 * CLUSTER).map((r) => [r.kind, r.bytes]),
      [['write-zeroes', 1000]],
      'the copy engine zeroes the tail rather than writing data',
    );
    t.true((await zeroClusters(f.tgt))[16], 'block status of the last cluster');
  } finally {
    await f.dispose();
  }
});
