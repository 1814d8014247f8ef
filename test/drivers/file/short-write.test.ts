/**
 * A short pwrite is continued, not taken for the whole write: under a file
 * size limit (RLIMIT_FSIZE, set with prlimit) the first pwrite of a write
 * across the limit writes up to it and the next one fails with EFBIG, which
 * the write reports. Had the short write been taken as done, the write
 * would succeed with the rest of the buffer never written.
 */
import { execFile } from 'node:child_process';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import test from 'ava';
import { fileDriver } from '../../../drivers/file/driver.js';
import { requirePeer } from '../../helpers/peers.js';
import { fileFixture } from './fixture.js';

const run = promisify(execFile);
const SCRIPT = fileURLToPath(new URL('../../fixtures/short-write/write-past-limit.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

test('a write across the file size limit writes up to it, then fails with EFBIG', async (t) => {
  if (!requirePeer(t, 'prlimit')) return;
  const f = await fileFixture(t, fileDriver);
  const path = f.path('limited.img');
  await writeFile(path, '');
  await truncate(path, 200_000);
  const { stdout } = await run('prlimit', ['--fsize=100000', process.execPath, '--import=tsx', SCRIPT, path, '200000'], { cwd: ROOT });
  t.deepEqual(JSON.parse(stdout), { outcome: 'EFBIG' });
  const content = await readFile(path);
  t.true(content.subarray(0, 100_000).every((b) => b === 0x5a), 'the short write landed');
  t.true(content.subarray(100_000).every((b) => b === 0), 'nothing past the limit');
});
