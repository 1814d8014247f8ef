/**
 * The overlay blockdev-snapshot-sync makes is held only by the users it
 * took over, as in QEMU: once the last of them is gone it closes and leaves
 * the graph. Checked with qemu-storage-daemon 7.2 as the oracle, through
 * the ways a user goes: an export deleted, a mirror that moved the
 * overlay's users to its target and ended, and a stream that unlinked the
 * overlay from the chain above it. The named nodes left are
 * recorded, so our daemon is held to them even without qemu-storage-daemon.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test, { type ExecutionContext } from 'ava';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const ok = { return: {} };

interface Outcome {
  /** Named nodes after the export of the first overlay was deleted. */
  afterExportDel: string[];
  /** Named nodes, and the export's node, after the mirror of the second overlay pivoted and ended. */
  afterMirror: string[];
  exportNode: string;
  /** Named nodes after a stream into the top overlay dropped the one under it from the chain. */
  afterStream: string[];
}

async function namedNodes(client: QmpClient): Promise<string[]> {
  const nodes = (await client.execute('query-named-block-nodes', { flat: true })).return as { 'node-name': string }[];
  return nodes.map((n) => n['node-name']).filter((n) => !n.startsWith('#')).sort();
}

async function run(t: ExecutionContext, kind: 'qemu' | 'ours'): Promise<Outcome> {
  const dir = await tempDir(t, `blocklayer-overlay-lifetime-${kind}-`);
  const img = (name: string) => join(dir, name);
  for (const name of ['a.raw', 'b.raw', 'c.raw', 't.raw']) execFileSync('qemu-img', ['create', '-q', '-f', 'raw', img(name), '4M']);
  const raw = (node: string, file: string) => ['--blockdev', `driver=raw,node-name=${node},file.driver=file,file.filename=${img(file)}`];
  const daemon = await startDaemon(kind, [...raw('a', 'a.raw'), ...raw('b', 'b.raw'), ...raw('c', 'c.raw'), ...raw('tgt', 't.raw')]);
  t.teardown(() => daemon.stop());
  const client = await QmpClient.connect(daemon.socket, { negotiate: true });
  t.teardown(() => client.close());
  const step = async (command: string, args: Record<string, unknown>) => t.deepEqual(await client.execute(command, args), ok, `${kind}: ${command}`);

  await step('nbd-server-start', { addr: { type: 'unix', data: { path: img('nbd.sock') } } });
  await step('block-export-add', { type: 'nbd', id: 'ea', 'node-name': 'a', writable: true });
  await step('blockdev-snapshot-sync', { 'node-name': 'a', 'snapshot-file': img('ova.qcow2'), 'snapshot-node-name': 'ova' });
  await step('block-export-del', { id: 'ea' });
  await client.waitEvent('BLOCK_EXPORT_DELETED');
  const afterExportDel = await namedNodes(client);

  await step('block-export-add', { type: 'nbd', id: 'eb', 'node-name': 'b', writable: true });
  await step('blockdev-snapshot-sync', { 'node-name': 'b', 'snapshot-file': img('ovb.qcow2'), 'snapshot-node-name': 'ovb' });
  await step('blockdev-mirror', { 'job-id': 'm', device: 'ovb', target: 'tgt', sync: 'full' });
  await client.waitEvent('BLOCK_JOB_READY');
  await step('job-complete', { id: 'm' });
  await client.waitEvent('BLOCK_JOB_COMPLETED');
  for (let i = 0; i < 200 && ((await client.execute('query-jobs')).return as unknown[]).length > 0; i++) await sleep(10);
  const afterMirror = await namedNodes(client);
  const exports = (await client.execute('query-block-exports')).return as { id: string; 'node-name': string }[];
  const exportNode = exports.find((e) => e.id === 'eb')?.['node-name'] ?? '(none)';

  await step('block-export-add', { type: 'nbd', id: 'ec', 'node-name': 'c', writable: true });
  await step('blockdev-snapshot-sync', { 'node-name': 'c', 'snapshot-file': img('ovc1.qcow2'), 'snapshot-node-name': 'ovc1' });
  await step('blockdev-snapshot-sync', { 'node-name': 'ovc1', 'snapshot-file': img('ovc2.qcow2'), 'snapshot-node-name': 'ovc2' });
  await step('block-stream', { 'job-id': 's', device: 'ovc2', 'base-node': 'c' });
  await client.waitEvent('BLOCK_JOB_COMPLETED');
  for (let i = 0; i < 200 && ((await client.execute('query-jobs')).return as unknown[]).length > 0; i++) await sleep(10);
  const afterStream = await namedNodes(client);
  return { afterExportDel, afterMirror, exportNode, afterStream };
}

/** What qemu-storage-daemon 7.2 left: each overlay gone with its last user; the old images stay (blockdev-add's). */
const RECORDED: Outcome = {
  afterExportDel: ['a', 'b', 'c', 'tgt'],
  afterMirror: ['a', 'b', 'c', 'tgt'],
  exportNode: 'tgt',
  afterStream: ['a', 'b', 'c', 'ovc2', 'tgt'],
};

test('our daemon closes an overlay with its last user, as qemu-storage-daemon 7.2 did', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  t.deepEqual(await run(t, 'ours'), RECORDED);
});

test('qemu-storage-daemon still closes them as recorded', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon') || !requirePeer(t, 'qemu-img')) return;
  t.deepEqual(await run(t, 'qemu'), RECORDED);
});
