/**
 * block-commit against qemu-storage-daemon 7.2: the recording
 * test/fixtures/qemu-transcripts/commit.txt (made by
 * record-stream-commit.py: argument errors in QEMU's order, a slow
 * intermediate commit with busy nodes, pause and set-speed, cancel,
 * auto-finalize/dismiss off and file names, active commits of an NBD
 * export with complete, soft and forced cancel and job-finalize, bases
 * smaller than top, backing-file, and the on-error policies with read and
 * write errors) and the reference transcript s7.txt's commit sections. Every
 * reply and each job's events are compared (test/helpers/job-transcripts.ts);
 * query-named-block-nodes replies as the recordings condense them; images
 * are checked with qemu-img afterwards.
 */
import { join } from 'node:path';
import test from 'ava';
import type { QmpMessage } from '../../../core/qmp/qmp-client.js';
import {
  type ChainSession,
  checkImage,
  compareImages,
  flatten,
  havePeers,
  nodeSummary,
  openChainSession,
  parseSummary,
  qemuImgInfo,
} from '../../helpers/chain-session.js';
import { Replay, readSection, type TranscriptSection, waitForProgress } from '../../helpers/job-transcripts.js';

const K_CASES = [
  { policy: 'report', op: 'read', errno: 'EIO', succeeds: false },
  { policy: 'stop', op: 'read', errno: 'EIO', succeeds: true },
  { policy: 'ignore', op: 'read', errno: 'EIO', succeeds: true },
  { policy: 'report', op: 'write', errno: 'EIO', succeeds: false },
  { policy: 'enospc', op: 'write', errno: 'ENOSPC', succeeds: true },
  { policy: 'enospc', op: 'write', errno: 'EIO', succeeds: false },
] as const;

let session: Promise<ChainSession> | undefined;

/** One layer for the whole recording, with every image made up front as the recorder made them. */
function commit(): Promise<ChainSession> {
  session ??= (async () => {
    const s = await openChainSession();
    s.chainImages('c_');
    s.image('c_other', '16M', undefined, ['write -P 0x44 0 1M']);
    for (const prefix of ['d_', 'e_', 'f_']) s.chainImages(prefix);
    s.chainImages('g_', '8M');
    s.chainImages('h_', '8M');
    K_CASES.forEach((_, i) => s.chainImages(`k${i}_`));
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

/** Implicit node names (a filter's) depend on how many nodes were opened before. */
function withoutImplicitNames(reply: unknown): unknown {
  return JSON.parse(JSON.stringify(reply).replace(/#block\d+/g, '#blockNNN')) as unknown;
}

async function replay(t: Parameters<typeof havePeers>[0], s: ChainSession, title: string, options: ConstructorParameters<typeof Replay>[3] = {}) {
  const section = readSection('commit.txt', title);
  return new Replay(t, await s.client(), section, {
    rewrite: (request) => s.rewrite(request),
    normalise: Object.fromEntries(section.steps.map((_, i) => [i, (reply: QmpMessage) => withoutImplicitNames(s.withoutDir(reply))])),
    summary: summaries(section, s),
    ...options,
  }).run();
}

test.serial('A: setup of the chains', async (t) => {
  if (!havePeers(t)) return;
  await replay(t, await commit(), 'A:');
});

test.serial('B: argument errors in QEMU order (iotest 040: device, top and base by node and file, other chains, reversed, into itself, backing-file, job id, speed, filter name)', async (t) => {
  if (!havePeers(t)) return;
  await replay(t, await commit(), 'B:');
});

test.serial('C: a slow intermediate commit: progress, busy nodes for commit, stream and blockdev-del, pause, set-speed, completion', async (t) => {
  if (!havePeers(t)) return;
  const s = await commit();
  const client = await s.client();
  const section = readSection('commit.txt', 'C:');
  const first = section.steps.findIndex((step) => step.request.execute === 'query-jobs');
  const expectedTop = flatten(s.path('c_top'), join(s.dir, 'expected-c-top.raw'));
  const expectedMid = flatten(s.path('c_mid'), join(s.dir, 'expected-c-mid.raw'));
  await replay(t, s, 'C:', {
    // QEMU had copied its first 512 KiB chunk (and skipped 2 MiB) when the harness asked.
    before: { [first]: () => waitForProgress(client, 'c1', 2621440) },
  });
  t.like(qemuImgInfo(s.path('c_top')), { 'backing-filename': s.path('c_base'), 'backing-filename-format': 'qcow2' });
  for (const name of ['c_top', 'c_base']) t.is(checkImage(s.path(name)), '', `qemu-img check ${name}`);
  t.is(compareImages(s.path('c_top'), expectedTop, 'qcow2', 'raw'), 'Images are identical.', 'the top reads as before');
  t.is(compareImages(s.path('c_base'), expectedMid, 'qcow2', 'raw'), 'Images are identical.', 'the base holds what mid showed');
});

test.serial('D: cancel keeps the chain; commit by (relative) file names with auto-finalize and auto-dismiss off', async (t) => {
  if (!havePeers(t)) return;
  const s = await commit();
  const client = await s.client();
  const section = readSection('commit.txt', 'D:');
  const cancel = section.steps.findIndex((step) => step.request.execute === 'block-job-cancel');
  const expectedTop = flatten(s.path('d_top'), join(s.dir, 'expected-d-top.raw'));
  await replay(t, s, 'D:', { before: { [cancel]: () => waitForProgress(client, 'd1', 2621440) } });
  t.like(qemuImgInfo(s.path('d_top')), { 'backing-filename': s.path('d_base') });
  t.is(compareImages(s.path('d_top'), expectedTop, 'qcow2', 'raw'), 'Images are identical.');
  t.is(checkImage(s.path('d_base')), '');
});

test.serial('E: active commit of an exported node: READY, busy nodes, complete moves the export to the base', async (t) => {
  if (!havePeers(t)) return;
  const s = await commit();
  const expectedTop = flatten(s.path('e_top'), join(s.dir, 'expected-e-top.raw'));
  await replay(t, s, 'E:');
  t.is(checkImage(s.path('e_base')), '');
  t.is(compareImages(s.path('e_base'), expectedTop, 'qcow2', 'raw'), 'Images are identical.', 'the base holds all three layers');
});

test.serial('F: active commit: soft cancel after READY completes without pivot, force cancels, job-finalize pivots', async (t) => {
  if (!havePeers(t)) return;
  const s = await commit();
  const expectedTop = flatten(s.path('f_top'), join(s.dir, 'expected-f-top.raw'));
  await replay(t, s, 'F:');
  t.is(compareImages(s.path('f_base'), expectedTop, 'qcow2', 'raw'), 'Images are identical.');
});

test.serial('G: a base smaller than top is grown (intermediate with backing-file, and active)', async (t) => {
  if (!havePeers(t)) return;
  const s = await commit();
  const expectedG = flatten(s.path('g_mid'), join(s.dir, 'expected-g-mid.raw'));
  const expectedH = flatten(s.path('h_top'), join(s.dir, 'expected-h-top.raw'));
  await replay(t, s, 'G:');
  t.like(qemuImgInfo(s.path('g_top')), { 'backing-filename': 'g_base.qcow2', 'backing-filename-format': 'qcow2' });
  t.like(qemuImgInfo(s.path('g_base')), { 'virtual-size': 16 * 1024 * 1024 });
  t.like(qemuImgInfo(s.path('h_base')), { 'virtual-size': 16 * 1024 * 1024 });
  for (const name of ['g_top', 'g_base', 'h_base']) t.is(checkImage(s.path(name)), '', `qemu-img check ${name}`);
  t.is(compareImages(s.path('g_base'), expectedG, 'qcow2', 'raw'), 'Images are identical.');
  t.is(compareImages(s.path('h_base'), expectedH, 'qcow2', 'raw'), 'Images are identical.');
});

K_CASES.forEach((c, i) => {
  test.serial(`K${i}: on-error=${c.policy}, ${c.errno} on the first data ${c.op}`, async (t) => {
    if (!havePeers(t)) return;
    const s = await commit();
    if (c.op === 'read') {
      await s.add(`k${i}_base`);
      await s.addFaulty(`k${i}_mid`, `k${i}_base`, 'read', c.errno);
    } else {
      await s.addFaulty(`k${i}_base`, undefined, 'write', c.errno);
      await s.add(`k${i}_mid`, `k${i}_base`);
    }
    await s.add(`k${i}_top`, `k${i}_mid`);
    const expectedMid = flatten(s.path(`k${i}_mid`), join(s.dir, `expected-k${i}-mid.raw`));
    const section = readSection('commit.txt', `K${i}:`);
    await replay(t, s, `K${i}:`, { summary: summaries(section, s, [c.op === 'read' ? `k${i}_mid` : `k${i}_base`]) });
    t.is(checkImage(s.path(`k${i}_base`)), '');
    if (c.succeeds) t.is(compareImages(s.path(`k${i}_base`), expectedMid, 'qcow2', 'raw'), 'Images are identical.', 'the base holds what mid showed');
  });
});

test.serial('s7: intermediate commit, active commit with READY and complete, errors (reference transcript)', async (t) => {
  if (!havePeers(t)) return;
  const s = await openChainSession();
  try {
    // s7's images: base 0-2M, mid 2-4M, top 4-6M; the commit chain was set up quietly.
    s.image('c_base', '16M', undefined, ['write -P 0x11 0 2M']);
    s.image('c_mid', '16M', 'c_base', ['write -P 0x22 2M 2M']);
    s.image('c_top', '16M', 'c_mid', ['write -P 0x33 4M 2M']);
    await s.add('base', undefined, { file: { driver: 'file', filename: s.path('c_base') } });
    await s.add('mid', 'base', { file: { driver: 'file', filename: s.path('c_mid') } });
    await s.add('top', 'mid', { file: { driver: 'file', filename: s.path('c_top') } });
    const expected = flatten(s.path('c_top'), join(s.dir, 'expected.raw'));
    const client = await s.client();
    for (const title of ['block-commit intermediate', 'block-commit active layer']) {
      const section = readSection('s7.txt', title);
      await new Replay(t, client, section, {
        rewrite: (request) => s.rewrite(request),
        normalise: Object.fromEntries(section.steps.map((_, i) => [i, (reply: QmpMessage) => s.withoutDir(reply)])),
        summary: summaries(section, s),
      }).run();
    }
    t.is(compareImages(s.path('c_base'), expected, 'qcow2', 'raw'), 'Images are identical.', 'base holds all three layers');
    t.is(checkImage(s.path('c_base')), '');
  } finally {
    await s.close();
  }
});
