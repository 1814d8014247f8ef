/** The native addon on its own: seeks, fallocate modes, errors, copy_file_range, and how it is loaded and built. */
import { execFile } from 'node:child_process';
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';
import test from 'ava';
import { fileDriver } from '../../../drivers/file/driver.js';
import { type FileNativeOps, loadFileNativeOps } from '../../../drivers/file/native/native.js';
import { fileFixture, filled, KiB, MiB, requireNative, sameBytes, sparseFile } from './fixture.js';

const ops = loadFileNativeOps().ops as FileNativeOps;

test('seekData/seekHole find extents and resolve -1 past the last data or EOF', async (t) => {
  if (!requireNative(t)) return;
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('s.img'), 4 * MiB, [[MiB, 64 * KiB, 1]]);
  const handle = await open(f.path('s.img'), 'r');
  t.teardown(() => handle.close());
  t.is(await ops.seekData(handle.fd, 0), MiB);
  t.is(await ops.seekHole(handle.fd, MiB), MiB + 64 * KiB);
  t.is(await ops.seekData(handle.fd, 2 * MiB), -1, 'trailing hole');
  t.is(await ops.seekHole(handle.fd, 5 * MiB), -1, 'beyond EOF');
  t.is(await ops.seekEnd(handle.fd), 4 * MiB);
});

test('fallocate modes and copy_file_range', async (t) => {
  if (!requireNative(t)) return;
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('c.img'), 2 * MiB, [[0, 64 * KiB, 0x61]]);
  const handle = await open(f.path('c.img'), 'r+');
  t.teardown(() => handle.close());
  t.is(await ops.copyFileRange(handle.fd, 0, handle.fd, MiB, 64 * KiB), 64 * KiB);
  const copy = Buffer.alloc(64 * KiB);
  await handle.read(copy, 0, copy.length, MiB);
  sameBytes(t, copy, filled(64 * KiB, 0x61));
  await ops.punchHole(handle.fd, 0, 64 * KiB);
  t.is(await ops.seekData(handle.fd, 0), MiB);
  await ops.allocate(handle.fd, 0, 64 * KiB);
  await ops.zeroRange(handle.fd, MiB, 4 * KiB);
  await handle.read(copy, 0, copy.length, MiB);
  sameBytes(t, copy.subarray(0, 4 * KiB), filled(4 * KiB, 0));
  sameBytes(t, copy.subarray(4 * KiB), filled(60 * KiB, 0x61));
});

test('failures reject with the errno name, a negative errno and the syscall', async (t) => {
  if (!requireNative(t)) return;
  await t.throwsAsync(ops.seekData(1 << 20, 0), { code: 'EBADF', message: 'lseek: Bad file descriptor' });
  const error = await t.throwsAsync(ops.punchHole(1 << 20, 0, 4096));
  t.like(error, { errno: -9, syscall: 'fallocate' });
  t.throws(() => ops.seekData(-1, 0), { code: 'ERR_INVALID_ARG_TYPE' });
});

test('BLOCKLAYER_NO_NATIVE=1 is read at each load', (t) => {
  if (!requireNative(t)) return;
  const saved = process.env.BLOCKLAYER_NO_NATIVE;
  t.teardown(() => {
    if (saved === undefined) delete process.env.BLOCKLAYER_NO_NATIVE;
    else process.env.BLOCKLAYER_NO_NATIVE = saved;
  });
  process.env.BLOCKLAYER_NO_NATIVE = '1';
  t.deepEqual(loadFileNativeOps(), { ops: undefined, reason: 'disabled by BLOCKLAYER_NO_NATIVE=1' });
  delete process.env.BLOCKLAYER_NO_NATIVE;
  t.is(loadFileNativeOps().ops, ops);
});

test('the build script never fails and says when the fallback is used', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, ['drivers/file/native/build.mjs'], {
    env: { ...process.env, BLOCKLAYER_NO_NATIVE: '1' },
  });
  t.is(stdout.trim(), 'blocklayer: the file driver will use its portable fallback (no native sparse-ops addon): BLOCKLAYER_NO_NATIVE=1');
});
