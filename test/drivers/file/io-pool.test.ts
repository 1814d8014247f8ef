/**
 * The native addon's read/write thread pool (native/io_pool.c) on its own:
 * data lands where each request says under many requests at once, reads
 * stop at the end of the file, errors are shaped as Node's, threads start
 * on demand within the bound and leave when idle, and the pool keeps a
 * process alive only while a request is in flight.
 */
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import test from 'ava';
import { fileDriver } from '../../../drivers/file/driver.js';
import { type FileNativeOps, loadFileNativeOps } from '../../../drivers/file/native/native.js';
import { fileFixture, filled, KiB, requireNative, sameBytes, sparseFile } from './fixture.js';

const run = promisify(execFile);
const ops = loadFileNativeOps().ops as FileNativeOps;
const threadCount = (): number => readdirSync('/proc/self/task').length;

test('300 writes and reads at once each land at their own offset', async (t) => {
  if (!requireNative(t)) return;
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('p.img'), 300 * 4 * KiB);
  const handle = await open(f.path('p.img'), 'r+');
  t.teardown(() => handle.close());
  const pieces = Array.from({ length: 300 }, (_, i) => filled(4 * KiB, i % 251));
  // Submitted out of offset order; the reads then go into subarrays of one buffer.
  const order = pieces.map((_, i) => (i * 7) % 300);
  const results = await Promise.all(order.map((i) => ops.pwrite(handle.fd, pieces[i]!, i * 4 * KiB)));
  t.true(results.every((r) => r === undefined));
  sameBytes(t, await readFile(f.path('p.img')), Buffer.concat(pieces));

  const back = Buffer.alloc(300 * 4 * KiB);
  const counts = await Promise.all(order.map((i) => ops.pread(handle.fd, back.subarray(i * 4 * KiB, (i + 1) * 4 * KiB), i * 4 * KiB)));
  t.true(counts.every((n) => n === 4 * KiB));
  sameBytes(t, back, Buffer.concat(pieces));
});

test('a read stops at the end of the file; errors carry code, errno and syscall', async (t) => {
  if (!requireNative(t)) return;
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('e.img'), 10 * KiB, [[0, 10 * KiB, 0x3c]]);
  const handle = await open(f.path('e.img'), 'r');
  const buf = Buffer.alloc(8 * KiB);
  t.is(await ops.pread(handle.fd, buf, 6 * KiB), 4 * KiB);
  sameBytes(t, buf.subarray(0, 4 * KiB), filled(4 * KiB, 0x3c));
  t.is(await ops.pread(handle.fd, buf, 12 * KiB), 0, 'past the end');
  const readOnly = await t.throwsAsync(ops.pwrite(handle.fd, buf, 0));
  t.like(readOnly as NodeJS.ErrnoException, { code: 'EBADF', errno: -9, syscall: 'write' });
  await handle.close();
  // Not a closed descriptor's number: another test may have been given it again meanwhile.
  const neverOpen = 2 ** 30;
  t.like((await t.throwsAsync(ops.pread(neverOpen, buf, 0))) as NodeJS.ErrnoException, { code: 'EBADF', syscall: 'read' });
  t.throws(() => ops.pwrite(-1, buf, 0), { message: 'expected (fd, buffer, position)' });
  t.throws(() => ops.pread(neverOpen, 'text' as unknown as Buffer, 0), { message: 'expected (fd, buffer, position)' });
});

// Serial tests run first, alone: no other test's pool threads are counted.
test.serial('threads start with the requests in flight, at most 64, and leave after 10 s idle', async (t) => {
  if (!requireNative(t)) return;
  t.timeout(30_000);
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('t.img'), 4 * KiB);
  const handle = await open(f.path('t.img'), 'r');
  t.teardown(() => handle.close());
  const before = threadCount();
  const buf = Buffer.alloc(4 * KiB);
  await ops.pread(handle.fd, buf, 0);
  t.is(threadCount(), before + 1, 'one request, one thread');
  await Promise.all(Array.from({ length: 500 }, () => ops.pread(handle.fd, Buffer.alloc(4 * KiB), 0)));
  const busy = threadCount();
  t.true(busy > before && busy <= before + 64, `${busy - before} threads for 500 requests`);
  // They leave 10 s after going idle; a loaded machine may run them a little late.
  const idleSince = Date.now();
  await new Promise((r) => setTimeout(r, 9_000));
  t.true(threadCount() > before, 'idle threads stay for 10 s');
  while (threadCount() > before && Date.now() - idleSince < 15_000) await new Promise((r) => setTimeout(r, 100));
  t.is(threadCount(), before, 'idle threads left');
  t.true(Date.now() - idleSince >= 9_900, 'not before their 10 s');
});

test('the pool keeps a process alive while a request is in flight, and not once idle', async (t) => {
  if (!requireNative(t)) return;
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('a.img'), 4 * KiB);
  const script = [
    "import { openSync } from 'node:fs';",
    "import { loadFileNativeOps } from './drivers/file/native/native.ts';",
    `const fd = openSync(${JSON.stringify(f.path('a.img'))}, 'r+');`,
    "loadFileNativeOps().ops.pwrite(fd, Buffer.from('done'), 0).then(() => console.log('written'));",
  ].join('\n');
  const started = Date.now();
  const { stdout } = await run(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { cwd: process.cwd(), timeout: 8000 });
  t.is(stdout.trim(), 'written', 'the write completed before the process ended');
  t.true(Date.now() - started < 8000, 'and the idle threads did not hold it for their 10 s');
  t.is((await readFile(f.path('a.img'))).subarray(0, 4).toString(), 'done');
});
