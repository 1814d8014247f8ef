/**
 * blockdev-snapshot-internal-sync and blockdev-snapshot-delete-internal-sync
 * (as commands and as a transaction action) over QMP, the same conversation
 * with qemu-storage-daemon 7.2 and with our daemon, each on its own copy of
 * the images: every reply (errors in QEMU's order and words, recorded with
 * each step; the times in the replies made alike), the snapshot lists, and
 * at the end the qcow2 files byte for byte but for the snapshots' dates and
 * VM clocks, which qemu-img check finds clean.
 */
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { commandResult } from '../../helpers/command-result.js';
import { startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const error = (desc: string) => ({ error: { class: 'GenericError', desc } });
const ok = { return: {} };
/** undefined: a success whose content the two daemons are compared on. */
type Step = [command: string, args: Record<string, unknown>, reply?: unknown];
const create = (device: string, name: string, reply: unknown = ok): Step => ['blockdev-snapshot-internal-sync', { device, name }, reply];
const remove = (args: Record<string, unknown>, reply?: unknown): Step => ['blockdev-snapshot-delete-internal-sync', { device: 'q', ...args }, reply];

const STEPS: Step[] = [
  create('q', 'first'),
  create('q', 'first', error("Snapshot with name 'first' already exists on device 'q'")),
  create('q', '', error('Name is empty')),
  create('f', 'x', error('Need a root block node')),
  create('r', 'x', error("Block format 'raw' used by device 'r' does not support internal snapshots")),
  create('ro', 'x', error("Device 'ro' is read only")),
  create('nope', 'x', error("Cannot find device='nope' nor node-name='nope'")),
  ['blockdev-snapshot-internal-sync', { device: 'q' }, error("Parameter 'name' is missing")],
  ['query-named-block-nodes', {}],
  remove({}, error('Name or id must be provided')),
  remove({ name: 'zz' }, error("Snapshot with id 'null' and name 'zz' does not exist on device 'q'")),
  remove({ id: '9', name: 'first' }, error("Snapshot with id '9' and name 'first' does not exist on device 'q'")),
  ['blockdev-snapshot-delete-internal-sync', { device: 'r', name: 'x' }, error('Failed to get a snapshot list: Operation not supported')],
  ['transaction', { actions: [{ type: 'blockdev-snapshot-internal-sync', data: { device: 'q', name: 't1' } }, { type: 'abort', data: {} }] }, error('Transaction aborted using Abort action')],
  ['transaction', { actions: [{ type: 'blockdev-snapshot-internal-sync', data: { device: 'q', name: 't1' } }], properties: { 'completion-mode': 'grouped' } },
    error("Action 'blockdev-snapshot-internal-sync' does not support Transaction property completion-mode = grouped")],
  ['transaction', { actions: [{ type: 'blockdev-snapshot-internal-sync', data: { device: 'q', name: 'second' } }] }, ok],
  create('q', 'third'),
  ['query-named-block-nodes', {}],
  remove({ id: '1' }),
  remove({ name: 'third' }),
  ['query-named-block-nodes', {}],
];

/** Times differ between two runs: dates and the VM clock (qemu-storage-daemon's reads as the real time). */
function withoutTimes(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutTimes);
  if (value === null || typeof value !== 'object') return value;
  const timeless = ['date-sec', 'date-nsec', 'vm-clock-sec', 'vm-clock-nsec'];
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, timeless.includes(k) ? 'TIME' : withoutTimes(v)]));
}

/** What a step's reply is compared on: query-named-block-nodes as the snapshot lists of the named nodes. */
function view(command: string, reply: { return?: unknown }): unknown {
  if (command !== 'query-named-block-nodes' || reply.return === undefined) return withoutTimes(reply);
  const nodes = reply.return as { 'node-name': string; image: { snapshots?: unknown } }[];
  return withoutTimes(Object.fromEntries(nodes.filter((n) => !n['node-name'].startsWith('#')).map((n) => [n['node-name'], n.image.snapshots ?? null])));
}

/** Where the image's snapshot table is and how many entries it has, as its header says now. */
async function snapshotTableOf(path: string): Promise<[number, number]> {
  const header = await readFile(path);
  return [Number(header.readBigUInt64BE(64)), header.readUInt32BE(60)];
}

/**
 * Both files with the dates and VM clocks zeroed in every snapshot table
 * either header pointed to along the way: a table left behind (freed, not
 * discarded, as the file node ignores discards by default) keeps its times.
 * The entries are found in the first file; both must lay them out alike.
 */
async function withoutSnapshotTimes(paths: [string, string], tables: Set<string>): Promise<Buffer[]> {
  const files = await Promise.all(paths.map((p) => readFile(p)));
  const [first] = files as [Buffer, Buffer];
  for (const table of tables) {
    const [offset, count] = JSON.parse(table) as [number, number];
    let at = offset;
    for (let i = 0; i < count && at + 40 <= first.length; i++) {
      at = Math.ceil(at / 8) * 8;
      for (const file of files) file.fill(0, at + 16, at + 32);
      at += 40 + first.readUInt32BE(at + 36) + first.readUInt16BE(at + 12) + first.readUInt16BE(at + 14);
    }
  }
  return files;
}

test('internal snapshots over QMP: the replies and the file are qemu-storage-daemon’s', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-storage-daemon')) return;
  const dir = await tempDir(t, 'blocklayer-internal-snapshot-');
  const image = (side: string) => join(dir, `${side}.qcow2`);
  const raw = join(dir, 'disk.raw');
  await commandResult('qemu-img', ['create', '-q', '-f', 'qcow2', image('base'), '4M']);
  await commandResult('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', '-c', 'write -c -P 2 2M 128k', image('base')]);
  await commandResult('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
  const transcripts: Record<string, unknown[]> = {};
  const tables = new Set<string>();
  for (const side of ['qemu', 'ours'] as const) {
    await copyFile(image('base'), image(side));
    const daemon = await startDaemon(side, [
      '--blockdev', `driver=file,node-name=f,filename=${image(side)}`,
      '--blockdev', 'driver=qcow2,node-name=q,file=f',
      '--blockdev', `driver=file,node-name=rf,filename=${raw}`,
      '--blockdev', 'driver=raw,node-name=r,file=rf',
      '--blockdev', `driver=file,node-name=ro,filename=${raw},read-only=on`,
    ]);
    const transcript: unknown[] = [];
    try {
      const client = await QmpClient.connect(daemon.socket, { negotiate: true });
      for (const [command, args, expected] of STEPS) {
        const reply = (await client.execute(command, args)) as { return?: unknown };
        transcript.push(view(command, reply));
        tables.add(JSON.stringify(await snapshotTableOf(image(side))));
        if (expected !== undefined) t.deepEqual(reply, expected, `${side}: ${command} ${JSON.stringify(args)}`);
      }
      await client.execute('quit');
      await client.close();
    } finally {
      await daemon.stop();
    }
    transcripts[side] = transcript;
  }
  t.deepEqual(transcripts.ours, transcripts.qemu);
  const [ours, qemu] = await withoutSnapshotTimes([image('ours'), image('qemu')], tables);
  t.true(ours!.equals(qemu!), 'the files differ');
  t.is((await commandResult('qemu-img', ['check', '-q', '-f', 'qcow2', image('ours')])).code, 0);
});
