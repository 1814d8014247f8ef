/**
 * Backup's error policies against QEMU 7.2's transcript s4: on-target-error
 * report, ignore, stop, enospc and auto with EIO and ENOSPC, and
 * on-source-error=stop. QEMU injected the errors with blkdebug
 * (`inject-error`, once) under the target (the source); here the
 * x-inject-error filter (test/fixtures/error-filter) fails the first data
 * write (read) the same way. Replies, each job's events (offsets included:
 * 15728640 when the one failed 1 MiB copy is missing) and the data of the
 * backups that succeed are compared.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import test from 'ava';
import { Replay, readSection } from '../../helpers/job-transcripts.js';
import { SOURCE_DATA, SharedSession, assertIdentical, havePeers, type NodeSpec } from './transcript-daemon.js';

const cases = [
  { section: 'on-target-error=report, injected errno=5', target: 'bad0', errno: 'EIO', succeeds: false },
  { section: 'on-target-error=ignore, injected errno=5', target: 'bad1', errno: 'EIO', succeeds: true },
  { section: 'on-target-error=stop, injected errno=5', target: 'bad2', errno: 'EIO', succeeds: true },
  { section: 'on-target-error=enospc, injected errno=28', target: 'bad3', errno: 'ENOSPC', succeeds: true },
  { section: 'on-target-error=enospc, injected errno=5', target: 'bad4', errno: 'EIO', succeeds: false },
  { section: 'on-target-error=auto, injected errno=28', target: 'bad5', errno: 'ENOSPC', succeeds: true },
  { section: 'on-target-error=auto, injected errno=5', target: 'bad6', errno: 'EIO', succeeds: false },
] as const;

const s4 = new SharedSession([
  { kind: 'raw', name: 'src', data: SOURCE_DATA },
  ...cases.map((c): NodeSpec => ({ kind: 'inject', name: c.target, event: 'write', errno: c.errno })),
  { kind: 'inject', name: 'srcbad', event: 'read', errno: 'EIO', data: SOURCE_DATA },
  { kind: 'raw', name: 'tgtok' },
]);
test.after.always(() => s4.close());

const digest = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

for (const c of cases) {
  test.serial(`s4 ${c.section}`, async (t) => {
    if (!havePeers(t)) return;
    const { client, image } = await s4.get();
    const before = digest(image('src'));
    await new Replay(t, client, readSection('s4.txt', c.section)).run();
    if (c.succeeds) assertIdentical(t, image('src'), image(c.target));
    t.is(digest(image('src')), before, 'the error never altered the source');
  });
}

test.serial('s4 on-source-error=stop, read error injected on the source', async (t) => {
  if (!havePeers(t)) return;
  // The transcript's blkdebug rule had immediately=on: its read failed before
  // any other copy was started, so QEMU reported offset 0. x-inject-error
  // fails in the I/O path, like blkdebug's default (immediately=off); for
  // that, qemu-storage-daemon 7.2 was checked to report 15728640 here.
  const { client, image } = await s4.get();
  const section = readSection('s4.txt', 'on-source-error=stop');
  const step = section.steps[1]!;
  step.reply = JSON.parse(JSON.stringify(step.reply).replace('"offset":0,', '"offset":15728640,')) as typeof step.reply;
  await new Replay(t, client, section).run();
  assertIdentical(t, image('src'), image('tgtok'));
});
