/**
 * block-stream against qemu-storage-daemon 7.2: the recording
 * test/fixtures/qemu-transcripts/stream.txt (made by
 * record-stream-commit.py: argument errors in QEMU's order, a slow stream
 * with busy nodes, pause and set-speed, cancel, auto-finalize/dismiss off,
 * no-op and backing-file streams, an intermediate node, and the on-error
 * policies) and the reference transcript s7.txt's stream section. Every
 * reply and each job's events are compared (test/helpers/job-transcripts.ts);
 * query-named-block-nodes replies as the recordings condense them; images
 * are checked with qemu-img afterwards.
 */
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import type { QmpMessage } from '../../../core/qmp/qmp-client.js';
import {
  BASE,
  type ChainSession,
  checkImage,
  compareImages,
  flatten,
  havePeers,
  MID,
  nodeSummary,
  openChainSession,
  parseSummary,
  qemuImgInfo,
  TOP,
} from '../../helpers/chain-session.js';
import { Replay, readSection, type TranscriptSection, waitForProgress } from '../../helpers/job-transcripts.js';

const G_CASES = [
  { policy: 'report', errno: 'EIO' },
  { policy: 'ignore', errno: 'EIO' },
  { policy: 'stop', errno: 'EIO' },
  { policy: 'enospc', errno: 'ENOSPC' },
  { policy: 'enospc', errno: 'EIO' },
] as const;

let session: Promise<ChainSession> | undefined;

/** One layer for the whole recording, with every image made up front as the recorder made them. */
function stream(): Promise<ChainSession> {
  session ??= (async () => {
    const s = await openChainSession();
    s.image('s_base', '16M', undefined, BASE);
    s.image('s_mid', '16M', 's_base', MID);
    s.image('s_top', '16M', 's_mid', TOP);
    s.image('s_other', '16M', undefined, ['write -P 0x44 0 1M']);
    s.image('s_ro', '16M', 's_mid');
    s.chainImages('d_');
    s.chainImages('e_');
    s.image('f_base', '16M', undefined, BASE);
    s.image('f_mid1', '16M', 'f_base', MID);
    s.image('f_mid2', '16M', 'f_mid1', ['write -P 0x55 12M 1M']);
    s.image('f_top', '16M', 'f_mid2', TOP);
    s.image('g_base', '16M', undefined, BASE);
    G_CASES.forEach((_, i) => {
      s.image(`g${i}_mid`, '16M', 'g_base', MID);
      s.image(`g${i}_top`, '16M', `g${i}_mid`, TOP);
    });
    return s;
  })();
  return session;
}
test.after.always(async () => (await session)?.close());

/** Summaries of query-named-block-nodes steps; json: file names (QEMU's blkdebug, our x-inject-error) compared as such. */
function summaries(section: TranscriptSection, s: ChainSession, injected: readonly string[] = []) {
  const json = (row: unknown[]): unknown[] => row.map((v) => (typeof v === 'string' && v.startsWith('json:') ? 'json:…' : v));
  const entries = section.steps.flatMap((step, i) => {
    if (step.request.execute !== 'query-named-block-nodes') return [];
    const compare = (reply: QmpMessage, summary: string) => {
      const qemu = parseSummary(summary).filter((row) => !injected.includes(row[0] as string));
      const names = qemu.map((row) => row[0] as string);
      return { ours: (s.withoutDir(nodeSummary(reply, names)) as unknown[][]).map(json), qemu: qemu.map(json) };
    };
    return [[i, compare] as const];
  });
  return Object.fromEntries(entries);
}

async function replay(t: Parameters<typeof havePeers>[0], s: ChainSession, title: string, options: ConstructorParameters<typeof Replay>[3] = {}) {
  const section = readSection('stream.txt', title);
  return new Replay(t, await s.client(), section, {
    rewrite: (request) => s.rewrite(request),
    normalise: Object.fromEntries(section.steps.map((_, i) => [i, (reply: QmpMessage) => s.withoutDir(reply)])),
    summary: summaries(section, s),
    ...options,
  }).run();
}

test.serial('A: setup of the chains', async (t) => {
  if (!havePeers(t)) return;
  await replay(t, await stream(), 'A:');
});

test.serial('B: argument errors in QEMU order (mutually exclusive arguments, device, base, base-node, bottom, backing-file, job id, speed, read-only, filter name)', async (t) => {
  if (!havePeers(t)) return;
  await replay(t, await stream(), 'B:');
});

test.serial('C: a slow stream: progress, busy nodes for stream, commit and blockdev-del, pause, set-speed, completion', async (t) => {
  if (!havePeers(t)) return;
  const s = await stream();
  const client = await s.client();
  const section = readSection('stream.txt', 'C:');
  const first = section.steps.findIndex((step) => step.request.execute === 'query-jobs');
  await replay(t, s, 'C:', {
    // QEMU had copied its first 512 KiB chunk (and skipped 2 MiB) when the harness asked.
    before: { [first]: () => waitForProgress(client, 'st1', 2621440) },
  });
  t.like(qemuImgInfo(s.path('s_top')), { 'backing-filename': s.path('s_base'), 'backing-filename-format': 'qcow2' });
  t.is(checkImage(s.path('s_top')), '');
  // s_top now reads as the chain did: its own data, then s_mid's, then s_base's.
  const expected = join(s.dir, 'expected-s.raw');
  // A copy of s_base: the layer has s_base open read-write, so qemu-io could not open it below x_mid (image locks).
  copyFileSync(s.path('s_base'), s.path('x_base'));
  s.image('x_mid', '16M', 'x_base', MID);
  s.image('x_top', '16M', 'x_mid', TOP);
  t.is(compareImages(s.path('s_top'), flatten(s.path('x_top'), expected), 'qcow2', 'raw'), 'Images are identical.');
});

test.serial('D: cancel keeps the chain; a full stream with auto-finalize and auto-dismiss off drops the backing file', async (t) => {
  if (!havePeers(t)) return;
  const s = await stream();
  const client = await s.client();
  const section = readSection('stream.txt', 'D:');
  const cancel = section.steps.findIndex((step) => step.request.execute === 'block-job-cancel');
  const expected = flatten(s.path('d_top'), join(s.dir, 'expected-d.raw'));
  await replay(t, s, 'D:', { before: { [cancel]: () => waitForProgress(client, 'sd1', 2621440) } });
  const info = qemuImgInfo(s.path('d_top'));
  t.false('backing-filename' in info, 'no backing file in the header');
  t.is(checkImage(s.path('d_top')), '');
  t.is(compareImages(s.path('d_top'), expected, 'qcow2', 'raw'), 'Images are identical.');
});

test.serial('E: base is the direct backing (nothing to copy); base by a relative file name, with backing-file', async (t) => {
  if (!havePeers(t)) return;
  const s = await stream();
  const expected = flatten(s.path('e_top'), join(s.dir, 'expected-e.raw'));
  await replay(t, s, 'E:');
  t.like(qemuImgInfo(s.path('e_top')), { 'backing-filename': 'e_base.qcow2', 'backing-filename-format': 'qcow2' });
  t.is(checkImage(s.path('e_top')), '');
  t.is(compareImages(s.path('e_top'), expected, 'qcow2', 'raw'), 'Images are identical.');
});

test.serial('F: streaming into an intermediate node (no job id: Invalid job ID)', async (t) => {
  if (!havePeers(t)) return;
  const s = await stream();
  const top = flatten(s.path('f_top'), join(s.dir, 'expected-f-top.raw'));
  const mid2 = flatten(s.path('f_mid2'), join(s.dir, 'expected-f-mid2.raw'));
  await replay(t, s, 'F:');
  t.like(qemuImgInfo(s.path('f_mid2')), { 'backing-filename': s.path('f_base') });
  t.is(compareImages(s.path('f_mid2'), mid2, 'qcow2', 'raw'), 'Images are identical.');
  t.is(compareImages(s.path('f_top'), top, 'qcow2', 'raw'), 'Images are identical.', 'the overlay above reads the same');
});

G_CASES.forEach((c, i) => {
  test.serial(`G${i}: on-error=${c.policy}, ${c.errno} on the first read of the intermediate image`, async (t) => {
    if (!havePeers(t)) return;
    const s = await stream();
    if (i === 0) await s.add('g_base');
    await s.addFaulty(`g${i}_mid`, 'g_base', 'read', c.errno);
    await s.add(`g${i}_top`, `g${i}_mid`);
    const section = readSection('stream.txt', `G${i}:`);
    await replay(t, s, `G${i}:`, { summary: summaries(section, s, [`g${i}_mid`]) });
    t.is(checkImage(s.path(`g${i}_top`)), '');
  });
});

test.serial('s7: stream with base-node, then a full stream (reference transcript)', async (t) => {
  if (!havePeers(t)) return;
  const s = await openChainSession();
  try {
    // s7's images: base 0-2M, mid 2-4M, top 4-6M (its map after the full stream).
    s.image('s_base', '16M', undefined, ['write -P 0x11 0 2M']);
    s.image('s_mid', '16M', 's_base', ['write -P 0x22 2M 2M']);
    s.image('s_top', '16M', 's_mid', ['write -P 0x33 4M 2M']);
    const client = await s.client();
    for (const title of ['stream setup', 'block-stream']) {
      const section = readSection('s7.txt', title);
      await new Replay(t, client, section, {
        rewrite: (request) => s.rewrite(request),
        normalise: Object.fromEntries(section.steps.map((_, i) => [i, (reply: QmpMessage) => s.withoutDir(reply)])),
        summary: summaries(section, s),
      }).run();
    }
    t.false('backing-filename' in qemuImgInfo(s.path('s_top')));
  } finally {
    await s.close();
  }
});
