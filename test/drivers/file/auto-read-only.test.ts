/** auto-read-only: an image that cannot be opened read-write is opened read-only instead, only when allowed. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import test from 'ava';
import { fileDriver } from '../../../drivers/file/driver.js';
import { fileFixture, MiB, sparseFile } from './fixture.js';

const run = promisify(execFile);

test('an immutable file opens read-only with auto-read-only, and fails without it', async (t) => {
  const f = await fileFixture(t, fileDriver);
  const path = f.path('immutable.img');
  await sparseFile(path, MiB, [[0, 4096, 0x42]]);
  // Root can write any file but an immutable one; chattr is how to make one (ext4, xfs, btrfs).
  const immutable = await run('chattr', ['+i', path]).then(() => true, () => false);
  if (!immutable) {
    t.log('skipped: this file system cannot mark files immutable');
    t.pass();
    return;
  }
  t.teardown(() => run('chattr', ['-i', path]));
  await t.throwsAsync(f.add(path), { message: `Could not open '${path}': Operation not permitted` });
  const node = await f.add(path, { 'auto-read-only': true });
  t.true(node.readOnly);
  const buf = Buffer.alloc(4096);
  await node.read(0, buf);
  t.true(buf.every((b) => b === 0x42));
  await t.throwsAsync(node.write(0, buf), { message: "Block node 'f' is read-only" });
});
