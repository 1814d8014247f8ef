/**
 * The job lifecycle of blockdev-backup against QEMU 7.2's transcripts
 * s1 (A–D), s1d (D1, D2, E2, E3) and s10 (quit while a backup runs):
 * every reply, each job's events, and the copied data. The sections of a
 * transcript run in order against one daemon, as QEMU's did.
 * See test/helpers/job-transcripts.ts for what is compared and how.
 */
import test from 'ava';
import { Replay, progressDependsOnTiming, readSection, waitForProgress } from '../../helpers/job-transcripts.js';
import { MiB, SOURCE_DATA, SharedSession, assertIdentical, havePeers, type NodeSpec, withDaemon } from './transcript-daemon.js';

const src: NodeSpec = { kind: 'raw', name: 'src', data: SOURCE_DATA };
const raw = (name: string, size?: string): NodeSpec => (size === undefined ? { kind: 'raw', name } : { kind: 'raw', name, size });

const s1 = new SharedSession([src, raw('tgt'), raw('tgt2'), raw('tgt3')]);
// tgt4 was added in s1d's E1 (not replayed here); `small` is a smaller node.
const s1d = new SharedSession([src, raw('tgt3'), raw('tgt4'), raw('small', '8M')]);
test.after.always(() => Promise.all([s1.close(), s1d.close()]));

test.serial('s1 A: blockdev-backup with defaults', async (t) => {
  if (!havePeers(t)) return;
  const { client, image } = await s1.get();
  await new Replay(t, client, readSection('s1.txt', 'A:')).run();
  assertIdentical(t, image('src'), image('tgt'));
});

test.serial('s1 B: manual lifecycle, every verb probed', async (t) => {
  if (!havePeers(t)) return;
  const { client, image } = await s1.get();
  // At 2 MiB/s, how far the job got when queried or paused is a matter of
  // time (QEMU: 2 MiB); once it has copied its first chunk, it sleeps.
  const timing = progressDependsOnTiming();
  await new Replay(t, client, readSection('s1.txt', 'B:'), {
    before: { 1: () => waitForProgress(client, 'job1', MiB) },
    normalise: { 1: timing, 2: timing, 4: timing },
  }).run();
  assertIdentical(t, image('src'), image('tgt2'));
});

// QEMU cancelled (or paused) within 1 s, with the first 1 MiB copied and the next not due before 1 s.
test.serial('s1 C: block-job-cancel of a running backup', async (t) => {
  if (!havePeers(t)) return;
  const { client } = await s1.get();
  await new Replay(t, client, readSection('s1.txt', 'C:'), { before: { 1: () => waitForProgress(client, 'job2', MiB) } }).run();
});

test.serial('s1 D: block-job-cancel of a user-paused job', async (t) => {
  if (!havePeers(t)) return;
  const { client } = await s1.get();
  await new Replay(t, client, readSection('s1.txt', 'D:'), { before: { 1: () => waitForProgress(client, 'job3', MiB) } }).run();
});

test.serial('s1d D1: block-job-cancel of a user-paused job, then force=true', async (t) => {
  if (!havePeers(t)) return;
  const { client } = await s1d.get();
  await new Replay(t, client, readSection('s1d.txt', 'D1:'), { before: { 1: () => waitForProgress(client, 'job3', MiB) } }).run();
});

test.serial('s1d D2: job-cancel of a user-paused job', async (t) => {
  if (!havePeers(t)) return;
  const { client } = await s1d.get();
  await new Replay(t, client, readSection('s1d.txt', 'D2:'), { before: { 1: () => waitForProgress(client, 'job4', MiB) } }).run();
});

test.serial('s1d E2: argument and validation errors of blockdev-backup', async (t) => {
  if (!havePeers(t)) return;
  const { client, image } = await s1d.get();
  // Job j (started by the on-source-error=stop request) runs during the
  // next command; whether that command's drain still catches it running
  // (QEMU: paused, running) is a matter of time.
  await new Replay(t, client, readSection('s1d.txt', 'E2:'), { drainPausesVary: ['j'] }).run();
  assertIdentical(t, image('src'), image('tgt4'));
});

test.serial('s1d E3: verbs on a job that does not exist', async (t) => {
  if (!havePeers(t)) return;
  const { client } = await s1d.get();
  await new Replay(t, client, readSection('s1d.txt', 'E3:')).run();
});

test.serial('s10: quit while a backup runs cancels it, then the daemon exits', async (t) => {
  if (!havePeers(t)) return;
  await withDaemon([src, raw('tgt')], async ({ client, daemon }) => {
    const exited = new Promise<number | null>((resolve) => {
      if (daemon.process.exitCode !== null) resolve(daemon.process.exitCode);
      else daemon.process.once('exit', (code) => resolve(code));
    });
    // QEMU's query found the first 1 MiB still in flight (offset 0); it had landed by the cancel.
    await new Replay(t, client, readSection('s10.txt', 'Q:'), { normalise: { 2: progressDependsOnTiming() } }).run();
    const code = await Promise.race([exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running after 5 s'), 5000))]);
    t.is(code, 0, 'the daemon exits with status 0 after quit');
  });
});
