/**
 * `transaction` with backups against QEMU 7.2's transcript s5: the abort
 * action, malformed transactions, rollback of a job that never started,
 * grouped and individual completion modes, one job-finalize for a whole
 * group, a bitmap added with a full backup (T4) and a blockdev-snapshot-sync
 * rolled back, then committed (T9). Replies, each job's events and the
 * copied data are compared. The bitmap exchanges of T2 and T3 are replayed
 * when a plugin provides the `block-dirty-bitmap-add` action.
 */
import { execFileSync } from 'node:child_process';
import { dirname } from 'node:path';
import test from 'ava';
import type { QmpClient, QmpMessage } from '../../../core/qmp/qmp-client.js';
import { Replay, progressDependsOnTiming, readSection, waitForProgress } from '../../helpers/job-transcripts.js';
import { MiB, SOURCE_DATA, SharedSession, assertIdentical, havePeers, type NodeSpec } from './transcript-daemon.js';

const s5 = new SharedSession([
  { kind: 'raw', name: 'src', data: SOURCE_DATA },
  ...['okA', 'okB', 'okC', 'okD'].map((name): NodeSpec => ({ kind: 'raw', name })),
  { kind: 'inject', name: 'badG', event: 'write', errno: 'EIO' },
  { kind: 'inject', name: 'badI', event: 'write', errno: 'EIO' },
]);
test.after.always(() => s5.close());

/** Whether a plugin provides the `block-dirty-bitmap-add` transaction action. */
async function hasBitmapAction(client: QmpClient): Promise<boolean> {
  const reply = await client.execute('transaction', { actions: [{ type: 'block-dirty-bitmap-add', data: { node: 'nosuch', name: 'x' } }] });
  return !JSON.stringify(reply).includes("does not accept value 'block-dirty-bitmap-add'");
}

/** The transcript summarises query-named-block-nodes as src's dirty bitmaps: `(…, src bitmaps only) []`. */
function srcBitmaps(reply: QmpMessage, summary: string): { ours: unknown; qemu: unknown } {
  const src = (reply.return as Record<string, unknown>[] | undefined)?.find((n) => n['node-name'] === 'src');
  return { ours: src?.['dirty-bitmaps'] ?? [], qemu: JSON.parse(summary.slice(summary.indexOf(')') + 1)) };
}

for (const section of ['T1/T2:', 'T3:']) {
  test.serial(`s5 ${section} abort action, malformed transactions`, async (t) => {
    if (!havePeers(t)) return;
    const { client } = await s5.get();
    const bitmaps = await hasBitmapAction(client);
    const transcript = readSection('s5.txt', section);
    const summaries = Object.fromEntries(transcript.steps.flatMap((s, i) => (s.summary !== undefined ? [[i, srcBitmaps] as const] : [])));
    await new Replay(t, client, transcript, {
      summary: summaries,
      skip: (step) =>
        !bitmaps && JSON.stringify(step.request).includes('block-dirty-bitmap-add')
          ? 'no plugin provides block-dirty-bitmap-add (dirty bitmaps are not implemented yet)'
          : undefined,
    }).run();
  });
}

test.serial('s5 T4: a bitmap added with its anchor full backup', async (t) => {
  if (!havePeers(t)) return;
  const { client, image } = await s5.get();
  await new Replay(t, client, readSection('s5.txt', 'T4:'), { summary: { 1: srcBitmaps } }).run();
  assertIdentical(t, image('src'), image('okA'));
});

test.serial('s5 T5: a failing second action cancels the first job before it starts', async (t) => {
  if (!havePeers(t)) return;
  const { client } = await s5.get();
  await new Replay(t, client, readSection('s5.txt', 'T5:')).run();
});

test.serial('s5 T6: grouped, gB fails, gA is cancelled', async (t) => {
  if (!havePeers(t)) return;
  const { client } = await s5.get();
  // gA (1 MiB/s) copies its first 1 MiB at once and the next not before 1 s; gB fails within that.
  await new Replay(t, client, readSection('s5.txt', 'T6:')).run();
});

test.serial('s5 T7: individual, iB fails, iA completes', async (t) => {
  if (!havePeers(t)) return;
  const { client, image } = await s5.get();
  // QEMU's iA was still running when iB's end drained the source (paused, running): a matter of time.
  await new Replay(t, client, readSection('s5.txt', 'T7:'), { drainPausesVary: ['iA'] }).run();
  assertIdentical(t, image('src'), image('okC'));
});

test.serial('s5 T8: grouped, auto-finalize=false: waiting until all are done, one job-finalize for all', async (t) => {
  if (!havePeers(t)) return;
  const { client, image } = await s5.get();
  // fB runs at 4 MiB/s: its progress at the first query is a matter of time (QEMU: 2 MiB).
  await new Replay(t, client, readSection('s5.txt', 'T8:'), {
    before: { 1: () => waitForProgress(client, 'fB', MiB) },
    normalise: { 1: progressDependsOnTiming(['fB']) },
    eventTimeoutMs: 8000,
  }).run();
  assertIdentical(t, image('src'), image('okC'));
  assertIdentical(t, image('src'), image('okD'));
});

/** `(node names) [...]`: the named nodes, and how many nodes have a name of QEMU's making (#blockNNN). */
function nodeNames(reply: QmpMessage, summary: string): { ours: unknown; qemu: unknown } {
  const view = (names: string[]) => ({ named: names.filter((n) => !n.startsWith('#')).sort(), implicit: names.filter((n) => n.startsWith('#')).length });
  const ours = (reply.return as { 'node-name': string }[]).map((n) => n['node-name']);
  return { ours: view(ours), qemu: view(JSON.parse(summary.slice(summary.indexOf(')') + 1)) as string[]) };
}

/** `(node/backing) [[name, backing file, read-only], …]` of the named nodes. */
function nodeBacking(reply: QmpMessage, summary: string): { ours: unknown; qemu: unknown } {
  const nodes = (reply.return as { 'node-name': string; backing_file?: string; ro: boolean }[]).filter((n) => !n['node-name'].startsWith('#'));
  const qemu = JSON.parse(summary.slice(summary.indexOf(')') + 1)) as [string, string | null, boolean][];
  return { ours: nodes.map((n) => [n['node-name'], n.backing_file ?? null, n.ro]).sort(), qemu: qemu.sort() };
}

test.serial('s5 T9: blockdev-snapshot-sync rolled back by abort, then committed', async (t) => {
  if (!havePeers(t)) return;
  const { client, image } = await s5.get();
  // QEMU's harness added `disk` (raw over a file) before the section without recording it.
  const dir = dirname(image('disk'));
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', image('disk'), '16M']);
  const added = await client.execute('blockdev-add', { driver: 'raw', 'node-name': 'disk', file: { driver: 'file', filename: image('disk') } });
  t.deepEqual(added, { return: {} });
  await new Replay(t, client, readSection('s5.txt', 'T9:'), {
    summary: { 1: nodeNames, 3: nodeBacking },
    rewrite: (request) => JSON.parse(JSON.stringify(request).replaceAll('$IMG', dir)) as typeof request,
  }).run();
  // The overlay nobody uses was dropped again; its image stays, backed by disk's file.
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', `${dir}/ov.qcow2`], { encoding: 'utf8' })) as Record<string, unknown>;
  t.is(info['backing-filename'], image('disk'));
  t.is(info['backing-filename-format'], 'raw');
});
