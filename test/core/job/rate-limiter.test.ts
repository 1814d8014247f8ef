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
