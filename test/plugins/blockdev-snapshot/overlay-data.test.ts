/**
 * What a snapshot does to the data, checked with QEMU's tools on our
 * daemon: the overlay blockdev-snapshot-sync creates (qemu-img info and
 * check), an NBD export that now serves the overlay, guest writes that
 * land in the overlay while the old image keeps its data, two disks
 * snapshotted atomically with a backup of one of them, and a transaction
 * whose last action fails leaving every export on the node it had.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

interface Setup {
  client: QmpClient;
  img(name: string): string;
  /** qemu-io commands on the export `name` (raw over NBD). */
  io(name: string, ...commands: string[]): string;
}

async function setUp(t: ExecutionContext, disks: string[]): Promise<Setup> {
  const dir = await tempDir(t, 'blocklayer-snapshot-data-');
  const img = (name: string) => join(dir, name);
  const args: string[] = [];
  for (const disk of disks) {
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', img(`${disk}.raw`), '4M']);
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4M', img(`${disk}.raw`)], { stdio: 'ignore' });
    args.push('--blockdev', `driver=raw,node-name=${disk},file.driver=file,file.filename=${img(`${disk}.raw`)}`);
  }
  const daemon = await startDaemon('ours', args);
  t.teardown(() => daemon.stop());
  const client = await QmpClient.connect(daemon.socket, { negotiate: true });
  t.teardown(() => client.close());
  const socket = img('nbd.sock');
  t.deepEqual(await client.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } }), { return: {} });
  for (const disk of disks) {
    t.deepEqual(await client.execute('block-export-add', { type: 'nbd', id: disk, 'node-name': disk, writable: true }), { return: {} });
  }
  const io = (name: string, ...commands: string[]) =>
    execFileSync('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), `nbd+unix:///${name}?socket=${socket}`], { encoding: 'utf8' });
  return { client, img, io };
}

async function exports(client: QmpClient): Promise<Record<string, string>> {
  const list = (await client.execute('query-block-exports')).return as { id: string; 'node-name': string }[];
  return Object.fromEntries(list.map((e) => [e.id, e['node-name']]));
}

function info(path: string): Record<string, unknown> {
  return JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path], { encoding: 'utf8' })) as Record<string, unknown>;
}

function readsPattern(format: string, path: string, pattern: string, offset: string, length: string): boolean {
  const out = execFileSync('qemu-io', ['-r', '-U', '-f', format, '-c', `read -P ${pattern} ${offset} ${length}`, path], { encoding: 'utf8' });
  return !out.includes('Pattern verification failed');
}

test('the export serves the overlay: guest writes land in it, the old image keeps its data', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const { client, img, io } = await setUp(t, ['disk']);
  const reply = await client.execute('blockdev-snapshot-sync', { 'node-name': 'disk', 'snapshot-file': img('ov.qcow2'), 'snapshot-node-name': 'ov' });
  t.deepEqual(reply, { return: {} });
  t.deepEqual(await exports(client), { disk: 'ov' });
  const overlay = info(img('ov.qcow2'));
  t.is(overlay['backing-filename'], img('disk.raw'));
  t.is(overlay['backing-filename-format'], 'raw');
  t.is(overlay['virtual-size'], 4 * 1024 * 1024);
  io('disk', 'write -P 0x22 64k 64k', 'read -P 0x11 0 64k', 'read -P 0x22 64k 64k');
  // The old node is read-only now (QEMU reopens it so): a second export may not write to it.
  const nodes = (await client.execute('query-named-block-nodes', { flat: true })).return as { 'node-name': string; ro: boolean }[];
  t.deepEqual(nodes.filter((n) => !n['node-name'].startsWith('#')).map((n) => [n['node-name'], n.ro]).sort(), [['disk', true], ['ov', false]]);
  t.deepEqual(await client.execute('block-export-del', { id: 'disk' }), { return: {} });
  // The export was the overlay's only user: it closed with it (QEMU's last reference), before the event.
  await client.waitEvent('BLOCK_EXPORT_DELETED');
  t.deepEqual(await client.execute('blockdev-del', { 'node-name': 'ov' }), { error: { class: 'GenericError', desc: "Failed to find node with node-name='ov'" } });
  t.true(readsPattern('raw', img('disk.raw'), '0x11', '0', '4M'), 'the old image is unchanged');
  t.true(readsPattern('qcow2', img('ov.qcow2'), '0x22', '64k', '64k'), 'the write is in the overlay');
  t.true(readsPattern('qcow2', img('ov.qcow2'), '0x11', '128k', '3968k'), 'the rest reads through to the old image');
  t.notThrows(() => execFileSync('qemu-img', ['check', '-f', 'qcow2', img('ov.qcow2')]), 'qemu-img check finds no error');
  const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-f', 'qcow2', img('ov.qcow2')], { encoding: 'utf8' })) as { depth: number; start: number; length: number }[];
  t.deepEqual(map.filter((e) => e.depth === 0).map((e) => [e.start, e.length]), [[64 * 1024, 64 * 1024]], 'only the written cluster is allocated in the overlay');
});

test('two disks snapshotted with a backup in one transaction', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const { client, img, io } = await setUp(t, ['a', 'b']);
  const reply = await client.execute('transaction', {
    actions: [
      { type: 'blockdev-snapshot-sync', data: { 'node-name': 'a', 'snapshot-file': img('a.qcow2'), 'snapshot-node-name': 'ova' } },
      { type: 'blockdev-snapshot-sync', data: { 'node-name': 'b', 'snapshot-file': img('b.qcow2'), 'snapshot-node-name': 'ovb' } },
      { type: 'drive-backup', data: { 'job-id': 'bk', device: 'a', target: img('backup.raw'), format: 'raw', sync: 'full' } },
    ],
  });
  t.deepEqual(reply, { return: {} });
  t.deepEqual(await exports(client), { a: 'ova', b: 'ovb' });
  io('a', 'write -P 0x33 0 1M');
  io('b', 'write -P 0x44 1M 1M');
  for (let i = 0; i < 500 && ((await client.execute('query-jobs')).return as unknown[]).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.deepEqual((await client.execute('query-jobs')).return, []);
  t.true(readsPattern('raw', img('backup.raw'), '0x11', '0', '4M'), 'the backup holds the data of the snapshot');
  t.true(readsPattern('raw', img('a.raw'), '0x11', '0', '4M'));
  t.true(readsPattern('raw', img('b.raw'), '0x11', '0', '4M'));
  t.true(readsPattern('qcow2', img('a.qcow2'), '0x33', '0', '1M'));
  t.true(readsPattern('qcow2', img('b.qcow2'), '0x44', '1M', '1M'));
});

test('a failing action takes no snapshot: every export keeps its node, the created file stays', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const { client, img, io } = await setUp(t, ['a', 'b']);
  const reply = await client.execute('transaction', {
    actions: [
      { type: 'blockdev-snapshot-sync', data: { 'node-name': 'a', 'snapshot-file': img('a.qcow2'), 'snapshot-node-name': 'ova' } },
      { type: 'blockdev-snapshot-sync', data: { 'node-name': 'b', 'snapshot-file': img('b.qcow2'), 'snapshot-node-name': 'ovb' } },
      { type: 'drive-backup', data: { device: 'a', target: img('backup.qcow2'), format: 'nosuch', sync: 'full' } },
    ],
  });
  t.deepEqual(reply, { error: { class: 'GenericError', desc: "Unknown file format 'nosuch'" } });
  t.deepEqual(await exports(client), { a: 'a', b: 'b' });
  const nodes = (await client.execute('query-named-block-nodes', { flat: true })).return as { 'node-name': string; ro: boolean }[];
  t.deepEqual(nodes.filter((n) => !n['node-name'].startsWith('#')).map((n) => [n['node-name'], n.ro]).sort(), [['a', false], ['b', false]]);
  // QEMU leaves the images it created (abort only takes the overlays out of the graph).
  t.true(existsSync(img('a.qcow2')) && existsSync(img('b.qcow2')));
  io('a', 'write -P 0x55 0 64k');
  t.true(readsPattern('raw', img('a.raw'), '0x55', '0', '64k'), 'writes still reach the old image');
});
