/**
 * Backups with dirty bitmaps against QEMU 7.2's transcript s8 (reference
 * §7.2): the anchor (bitmap-add with a full backup, I1), an incremental
 * backup (I2: the bitmap frozen, a successor recording, the job's copy
 * bitmap, all shown while it runs), cancels with each bitmap-mode (I3),
 * successes with always and never (I4), and a full backup that clears its
 * bitmap (I5). The guest writes between the sections go through our NBD
 * export of `src`, made by qemu-io; the incremental backup is checked by
 * qemu-img as the user would use it: put on top of the full one, it reads
 * as the source.
 */
import { execFileSync } from 'node:child_process';
import { dirname } from 'node:path';
import test from 'ava';
import type { QmpClient, QmpMessage } from '../../../core/qmp/qmp-client.js';
import { type TranscriptRequest, Replay, readSection, waitForProgress } from '../../helpers/job-transcripts.js';
import { requirePeer } from '../../helpers/peers.js';
import { MiB, SOURCE_DATA, SharedSession, assertIdentical, havePeers } from './transcript-daemon.js';

const s8 = new SharedSession([
  { kind: 'raw', name: 'src', data: SOURCE_DATA },
  { kind: 'raw', name: 'full' },
]);
test.after.always(() => s8.close());

/** The transcript summarises query-named-block-nodes as src's dirty bitmaps: `(… (…)) [...]`. */
function srcBitmaps(reply: QmpMessage, summary: string): { ours: unknown; qemu: unknown } {
  const src = (reply.return as Record<string, unknown>[] | undefined)?.find((n) => n['node-name'] === 'src');
  return { ours: src?.['dirty-bitmaps'] ?? [], qemu: JSON.parse(summary.slice(summary.indexOf(') [') + 1)) };
}

let pattern = 0x40;

/** QEMU's harness: 64 KiB guest writes at each offset, here through our NBD export by qemu-io, each time a new pattern. */
function guestWrites(dir: string, offsets: readonly number[]): void {
  pattern++;
  const commands = offsets.flatMap((offset) => ['-c', `write -P ${pattern} ${offset} 64k`]);
  execFileSync('qemu-io', ['-f', 'raw', ...commands, `nbd+unix:///src?socket=${dir}/nbd8.sock`], { stdio: 'ignore' });
}

/** Runs a section of s8: `$IMG` and `$T` are the session's directory; the images of the targets it adds are made first (16 MiB). */
async function replay(t: Parameters<typeof havePeers>[0], client: QmpClient, dir: string, title: string, options: { waitAt?: number; job?: string } = {}): Promise<void> {
  const section = readSection('s8.txt', title);
  for (const step of section.steps) {
    const file = (step.request.arguments?.file as { filename?: string } | undefined)?.filename;
    if (step.request.execute === 'blockdev-add' && file !== undefined) {
      execFileSync('qemu-img', ['create', '-q', '-f', String(step.request.arguments!.driver), file.replace('$IMG', dir), '16M']);
    }
  }
  const summary = Object.fromEntries(section.steps.flatMap((s, i) => (s.summary !== undefined ? [[i, srcBitmaps] as const] : [])));
  await new Replay(t, client, section, {
    summary,
    rewrite: (request) => JSON.parse(JSON.stringify(request).replaceAll('$IMG', dir).replaceAll('$T', dir)) as TranscriptRequest,
    // QEMU had copied the first 64 KiB (the rate limiter's first burst) by the time its harness asked.
    before: options.waitAt === undefined ? {} : { [options.waitAt]: () => waitForProgress(client, options.job!, 65536) },
  }).run();
}

test.serial('s8 setup and I1: the anchor, a bitmap added with a full backup', async (t) => {
  if (!havePeers(t) || !requirePeer(t, 'qemu-io')) return;
  const { client, image } = await s8.get();
  const dir = dirname(image('src'));
  // Our daemon was started with src and full; the rest of the setup is replayed.
  const setup = readSection('s8.txt', 'setup');
  setup.steps = setup.steps.filter((s) => s.request.execute !== 'blockdev-add');
  await new Replay(t, client, setup, { rewrite: (r) => JSON.parse(JSON.stringify(r).replaceAll('$T', dir)) as TranscriptRequest }).run();
  await replay(t, client, dir, 'I1:');
  assertIdentical(t, image('src'), image('full'));
});

test.serial('s8 I2: an incremental backup copies what the bitmap marks; on top of the full backup it reads as the source', async (t) => {
  if (!havePeers(t)) return;
  const { client, image } = await s8.get();
  const dir = dirname(image('src'));
  guestWrites(dir, [MiB, 10 * MiB]);
  await replay(t, client, dir, 'I2:', { waitAt: 3, job: 'inc1' });
  // Closed, so that the image's metadata is on disk for qemu-img.
  t.deepEqual(await client.execute('blockdev-del', { 'node-name': 'inc1' }), { return: {} });
  const map = JSON.parse(execFileSync('qemu-img', ['map', '-f', 'qcow2', '--output=json', `${dir}/inc1.qcow2`], { encoding: 'utf8' })) as {
    start: number;
    length: number;
    data: boolean;
  }[];
  t.deepEqual(
    map.filter((e) => e.data).map((e) => [e.start, e.length]),
    [[MiB, 65536], [10 * MiB, 65536]],
    'the incremental backup holds the two clusters written since the anchor, nothing else',
  );
  execFileSync('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', image('full'), '-F', 'raw', `${dir}/inc1.qcow2`]);
  const compare = execFileSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', `${dir}/inc1.qcow2`, image('src')], { encoding: 'utf8' });
  t.is(compare.trim(), 'Images are identical.', 'full backup + incremental = the source');
});

for (const mode of ['on-success', 'always', 'never']) {
  test.serial(`s8 I3: bitmap-mode=${mode}, cancelled after the first of two dirty clusters`, async (t) => {
    if (!havePeers(t)) return;
    const { client, image } = await s8.get();
    const dir = dirname(image('src'));
    guestWrites(dir, [MiB, 10 * MiB]);
    await replay(t, client, dir, `I3: sync=bitmap bitmap-mode=${mode},`, { waitAt: 3, job: `t_${mode.replace('-', '')}` });
  });
}

for (const mode of ['always', 'never']) {
  test.serial(`s8 I4: bitmap-mode=${mode}, success`, async (t) => {
    if (!havePeers(t)) return;
    const { client, image } = await s8.get();
    // QEMU's harness cleared b0 after I3 without recording it: I4's job copies only the next write.
    if (mode === 'always') t.deepEqual(await client.execute('block-dirty-bitmap-clear', { node: 'src', name: 'b0' }), { return: {} });
    guestWrites(dirname(image('src')), [MiB]);
    await replay(t, client, dirname(image('src')), `I4: sync=bitmap bitmap-mode=${mode},`);
  });
}

test.serial('s8 I5: a full backup with bitmap-mode on-success clears the bitmap', async (t) => {
  if (!havePeers(t)) return;
  const { client, image } = await s8.get();
  guestWrites(dirname(image('src')), [MiB]);
  await replay(t, client, dirname(image('src')), 'I5:');
  assertIdentical(t, image('src'), `${dirname(image('src'))}/full2.raw`);
});
