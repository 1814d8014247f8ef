import test from 'ava';
import { RateLimiter } from '../../../core/job/rate-limiter.js';

test('unlimited speed never waits', (t) => {
  const limiter = new RateLimiter(() => 0);
  t.is(limiter.delay(1 << 30), 0);
  t.is(limiter.delay(1 << 30), 0);
});

test('a first burst goes through; the excess stretches the slice and the next start waits for its end', (t) => {
  let now = 1_000_000_000;
  const limiter = new RateLimiter(() => now);
  limiter.setSpeed(1 << 20); // 1 MiB/s: 104857.6 bytes per 100 ms slice
  t.is(limiter.delay(1 << 20), 0, 'one 1 MiB chunk at once');
  t.is(limiter.delay(65536), 1_000_000_000, 'the next waits the whole second the chunk is worth');
  now += 999_999_999;
  t.is(limiter.delay(65536), 1);
  now += 2;
  t.is(limiter.delay(65536), 0, 'a new slice');
});

test('work is only counted when it may start', (t) => {
  let now = 0;
  const limiter = new RateLimiter(() => now);
  limiter.setSpeed(10 * 65536); // 65536 bytes per slice
  t.is(limiter.delay(65536), 0);
  t.is(limiter.delay(65536), 100_000_000);
  t.is(limiter.delay(65536), 100_000_000, 'refused requests did not add up');
  now = 100_000_001;
  t.is(limiter.delay(65536), 0);
});

test('a new speed applies to the next start', (t) => {
  const limiter = new RateLimiter(() => 0);
  limiter.setSpeed(1);
  t.is(limiter.delay(100), 0);
  t.true(limiter.delay(100) > 0);
  limiter.setSpeed(0);
  t.is(limiter.delay(100), 0);
});

test('account counts work whatever the quota and says how long the next start waits (QEMU ratelimit_calculate_delay)', (t) => {
  let now = 0;
  const limiter = new RateLimiter(() => now);
  limiter.setSpeed(10 * 65536); // 65536 bytes per slice
  t.is(limiter.account(1000), 0, 'within the quota');
  t.is(limiter.account(16 * 65536), ((1000 + 16 * 65536) / 65536) * 100_000_000, 'over it: until the slice, stretched by the excess, ends');
  t.is(limiter.delay(0), limiter.account(0), 'delay sees the same slice');
  now = 2_000_000_000;
  t.is(limiter.account(65535), 0, 'a new slice');
  limiter.setSpeed(0);
  t.is(limiter.account(1 << 30), 0, 'unlimited');
});
