/** The core file driver tests with the native addon (fallback.test.ts runs them without it). */
import test from 'ava';
import type { FileHandle } from 'node:fs/promises';
import { type FileState, fileDriver } from '../../../drivers/file/driver.js';
import { loadFileNativeOps } from '../../../drivers/file/native/native.js';
import { registerCoreTests } from './fixture.js';

registerCoreTests(fileDriver, loadFileNativeOps().ops === undefined ? 'fallback' : 'native');

test('after a failed fdatasync every flush fails, as the page cache may have dropped the data', async (t) => {
  let syncs = 0;
  const handle = {
    datasync: async () => {
      syncs++;
      throw Object.assign(new Error('fdatasync failed'), { code: 'EIO' });
    },
  };
  const state = { handle: handle as unknown as FileHandle } as FileState;
  await t.throwsAsync(fileDriver.flush!(state), { message: 'Input/output error' });
  await t.throwsAsync(fileDriver.flush!(state), { message: 'Input/output error' });
  t.is(syncs, 1);
});
