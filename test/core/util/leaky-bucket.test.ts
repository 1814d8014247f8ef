/** QEMU's throttle bucket as qemu-img convert -r uses it (core/util/leaky-bucket.ts), on a clock only sleeping moves. */
import test from 'ava';
import { LeakyBucket } from '../../../core/util/leaky-bucket.js';

const MiB = 1024 * 1024;

/** A bucket on a clock that only sleeping moves; returns when each request started (seconds). */
function timed(avg: number) {
  let clock = 0;
  const bucket = new LeakyBucket(avg, () => clock, async (ns) => {
    clock += ns;
  });
  const starts: number[] = [];
  const request = async (bytes: number) => {
    await bucket.admit(bytes);
    starts.push(clock / 1e9);
  };
  return { request, starts, advance: (seconds: number) => (clock += seconds * 1e9) };
}

test('a first request of any size starts at once; the next waits until the level is down to avg/10', async (t) => {
  const { request, starts } = timed(MiB);
  await Promise.all([request(2 * MiB), request(2 * MiB), request(2 * MiB)]);
  t.is(starts.length, 3);
  t.is(starts[0], 0);
  t.true(Math.abs(starts[1]! - 1.9) < 1e-6, `${starts[1]}`);
  t.true(Math.abs(starts[2]! - 3.9) < 1e-6, `${starts[2]}`);
});

test('requests go at once while the level stays within the burst, and the bucket leaks while idle', async (t) => {
  const { request, starts, advance } = timed(10 * MiB);
  for (let i = 0; i < 6; i++) await request(256 * 1024);
  t.deepEqual(starts.slice(0, 5), [0, 0, 0, 0, 0], 'up to 1 MiB (avg/10) is in the bucket before the fifth');
  t.true(Math.abs(starts[5]! - 0.025) < 1e-6, `the sixth waits until 1.25 MiB have leaked down to 1 MiB: ${starts[5]}`);
  advance(1);
  await request(MiB);
  t.is(starts[6], starts[5]! + 1, 'after a second idle the bucket is empty: no wait');
});
