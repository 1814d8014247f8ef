/**
 * blockdev-snapshot-sync and blockdev-snapshot over QMP, the same
 * conversation with qemu-storage-daemon 7.2 and with our daemon: every
 * reply (the errors in QEMU's order and words), the export events, and the
 * graph after each change (which node each export serves, each named
 * node's driver, read-only flag and backing node). QEMU's replies are
 * recorded with each step, so our daemon is held to them even where
 * qemu-storage-daemon is missing.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test, { type ExecutionContext } from 'ava';
import { QmpClient, type QmpMessage } from '../../../core/qmp/qmp-client.js';
import { type RunningDaemon, startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const error = (desc: string) => ({ error: { class: 'GenericError', desc } });
const ok = { return: {} };
const deleted = (id: string) => ({ event: 'BLOCK_EXPORT_DELETED', data: { id } });
const sync = (args: Record<string, unknown>, reply: unknown = ok): Step => ({ execute: 'blockdev-snapshot-sync', arguments: args, reply });
const snap = (node: string | undefined, overlay: string | undefined, reply: unknown = ok): Step => ({
  execute: 'blockdev-snapshot',
  arguments: { ...(node === undefined ? {} : { node }), ...(overlay === undefined ? {} : { overlay }) },
  reply,
});
const txn = (actions: [string, Record<string, unknown>][], reply: unknown = ok, grouped = false): Step => ({
  execute: 'transaction',
  arguments: { actions: actions.map(([type, data]) => ({ type, data })), ...(grouped ? { properties: { 'completion-mode': 'grouped' } } : {}) },
  reply,
});

/** A named node as compared: driver, read-only, and the node its backing edge leads to (by name, if it has one). */
type NodeView = [drv: string, ro: boolean];

type Step =
  | { execute: string; arguments?: Record<string, unknown>; reply: unknown; events?: unknown[] }
  /** query-block-exports (id → node) and query-named-block-nodes (named nodes only). */
  | { graph: { exports: Record<string, string>; nodes: Record<string, NodeView> } };

const SETUP_NODES: Record<string, NodeView> = {
  disk: ['raw', false], disk2: ['raw', false], tgt: ['raw', false], ov: ['qcow2', false], ov2: ['qcow2', false], ov3: ['qcow2', false],
  top: ['qcow2', false], base: ['qcow2', true],
};

function script(dir: string): Step[] {
  const img = (name: string) => join(dir, name);
  return [
    sync({ 'snapshot-file': img('x.qcow2') }, error("Cannot find device='' nor node-name=''")),
    sync({ device: 'disk', 'snapshot-file': img('x.qcow2') }, error("Cannot find device='disk' nor node-name=''")),
    sync({ device: 'nosuch', 'node-name': 'n2', 'snapshot-file': img('x.qcow2') }, error("Cannot find device='nosuch' nor node-name='n2'")),
    sync({ 'node-name': 'disk' }, error("Parameter 'snapshot-file' is missing")),
    sync({ 'node-name': 'disk', 'snapshot-file': img('x.qcow2') }, error('New overlay node-name missing')),
    sync({ 'node-name': 'disk', 'snapshot-file': img('x.qcow2'), 'snapshot-node-name': 'ov' }, error('New overlay node-name already in use')),
    sync({ 'node-name': 'disk', 'snapshot-file': img('x.qcow2'), 'snapshot-node-name': '#x' }, error("Invalid node-name: '#x'")),
    sync({ 'node-name': 'disk', 'snapshot-file': img('x.qcow2'), 'snapshot-node-name': 'sx', format: 'foo' }, error("Unknown file format 'foo'")),
    sync({ 'node-name': 'disk', 'snapshot-file': img('x.raw'), 'snapshot-node-name': 'sx', format: 'raw' }, error("Backing file not supported for file format 'raw'")),
    sync({ 'node-name': 'disk', 'snapshot-file': img('no.qcow2'), 'snapshot-node-name': 'sx', mode: 'existing' },
      error(`Could not open '${img('no.qcow2')}': No such file or directory`)),
    sync({ 'node-name': 'disk', 'snapshot-file': img('nodir/x.qcow2'), 'snapshot-node-name': 'sx' },
      error(`Could not create '${img('nodir/x.qcow2')}': No such file or directory`)),
    sync({ 'node-name': 'disk', 'snapshot-file': img('x.qcow2'), 'snapshot-node-name': 'sx', mode: 'bogus' }, error("Parameter 'mode' does not accept value 'bogus'")),
    sync({ 'node-name': 'disk', 'snapshot-file': img('t.raw'), 'snapshot-node-name': 'sx', mode: 'existing', format: 'raw' },
      error('The overlay does not support backing images')),
    sync({ 'node-name': 'base', 'snapshot-file': img('x.qcow2'), 'snapshot-node-name': 'sx' }, error("Node 'base' is busy: node is used as backing hd of 'top'")),
    snap('nosuch', 'ov', error("Cannot find device='nosuch' nor node-name='nosuch'")),
    snap('disk', 'nosuch', error("Cannot find device='nosuch' nor node-name='nosuch'")),
    snap('disk', undefined, error("Parameter 'overlay' is missing")),
    snap('disk', 'top', error('The overlay already has a backing image')),
    snap('disk', 'tgt', error('The overlay does not support backing images')),
    snap('ov', 'ov', error("Making 'ov' a backing child of 'ov' would create a cycle")),
    { graph: { exports: {}, nodes: SETUP_NODES } },
    { execute: 'nbd-server-start', arguments: { addr: { type: 'unix', data: { path: img('nbd.sock') } } }, reply: ok },
    { execute: 'block-export-add', arguments: { type: 'nbd', id: 'e', 'node-name': 'ov' }, reply: ok },
    snap('disk', 'ov', error('The overlay is already in use')),
    { execute: 'block-export-del', arguments: { id: 'e' }, reply: ok, events: [deleted('e')] },
    { execute: 'block-export-add', arguments: { type: 'nbd', id: 'd', 'node-name': 'disk', writable: true }, reply: ok },
    txn([['blockdev-snapshot', { node: 'disk', overlay: 'ov' }], ['abort', {}]], error('Transaction aborted using Abort action')),
    txn([['blockdev-snapshot-sync', { 'node-name': 'disk', 'snapshot-file': img('s1.qcow2'), 'snapshot-node-name': 's1' }],
      ['blockdev-snapshot-sync', { 'node-name': 'disk2', 'snapshot-file': img('s2.qcow2'), 'snapshot-node-name': 'disk' }]],
    error('New overlay node-name already in use')),
    txn([['blockdev-snapshot-sync', { 'node-name': 'disk', 'snapshot-file': img('s1.qcow2'), 'snapshot-node-name': 's1' }]],
      error("Action 'blockdev-snapshot-sync' does not support Transaction property completion-mode = grouped"), true),
    txn([['blockdev-snapshot', { node: 'disk', overlay: 'ov' }]], error("Action 'blockdev-snapshot' does not support Transaction property completion-mode = grouped"), true),
    { graph: { exports: { d: 'disk' }, nodes: SETUP_NODES } },
    txn([['blockdev-snapshot', { node: 'disk', overlay: 'ov' }], ['blockdev-snapshot', { node: 'disk', overlay: 'ov2' }]],
      error("Node 'disk' is busy: node is used as backing hd of 'ov'")),
    txn([['blockdev-snapshot', { node: 'disk', overlay: 'ov' }], ['blockdev-snapshot', { node: 'ov', overlay: 'ov2' }]]),
    { graph: { exports: { d: 'ov2' }, nodes: { ...SETUP_NODES, disk: ['raw', true], ov: ['qcow2', true] } } },
    snap('disk2', 'ov', error('The overlay is already in use')),
    sync({ 'node-name': 'disk', 'snapshot-file': img('y.qcow2'), 'snapshot-node-name': 'sy' }, error("Node 'disk' is busy: node is used as backing hd of 'ov'")),
    // Nothing uses disk2: the new overlay is dropped again at once (QEMU unrefs it), disk2 is left read-only.
    sync({ 'node-name': 'disk2', 'snapshot-file': img('s2.qcow2'), 'snapshot-node-name': 's2' }),
    { execute: 'blockdev-del', arguments: { 'node-name': 'ov2' }, reply: error('Node ov2 is in use') },
    { execute: 'blockdev-del', arguments: { 'node-name': 'ov' }, reply: error("Node 'ov' is busy: node is used as backing hd of 'ov2'") },
    { execute: 'blockdev-backup', arguments: { 'job-id': 'j', device: 'top', target: 'tgt', sync: 'full', speed: 1 }, reply: ok },
    snap('tgt', 'ov3', error("Node 'tgt' is busy: block device is in use by block job: backup")),
    { execute: 'job-cancel', arguments: { id: 'j' }, reply: ok },
    { graph: { exports: { d: 'ov2' }, nodes: { ...SETUP_NODES, disk: ['raw', true], ov: ['qcow2', true], disk2: ['raw', true] } } },
    // The node below the export is now ov2: a snapshot of it moves the export up once more.
    sync({ 'node-name': 'ov2', 'snapshot-file': img('s3.qcow2'), 'snapshot-node-name': 's3' }),
    { graph: { exports: { d: 's3' }, nodes: { ...SETUP_NODES, disk: ['raw', true], ov: ['qcow2', true], disk2: ['raw', true], ov2: ['qcow2', true], s3: ['qcow2', false] } } },
    { execute: 'block-export-del', arguments: { id: 'd' }, reply: ok, events: [deleted('d')] },
    // s3's only user was the export: the overlay goes with it (QEMU's last reference), ov2 under it stays.
    { graph: { exports: {}, nodes: { ...SETUP_NODES, disk: ['raw', true], ov: ['qcow2', true], disk2: ['raw', true], ov2: ['qcow2', true] } } },
  ];
}

/** Named nodes only: implicit ones are named differently by each daemon. */
async function graphView(client: QmpClient): Promise<unknown> {
  const exports = (await client.execute('query-block-exports')).return as { id: string; 'node-name': string }[];
  const nodes = (await client.execute('query-named-block-nodes', { flat: true })).return as { 'node-name': string; drv: string; ro: boolean }[];
  return {
    exports: Object.fromEntries(exports.map((e) => [e.id, e['node-name']])),
    nodes: Object.fromEntries(nodes.filter((n) => !n['node-name'].startsWith('#')).map((n) => [n['node-name'], [n.drv, n.ro]]).sort()),
  };
}

/** Job events depend on timing (drains pause and resume the job): only the other events are compared. */
function otherEvents(client: QmpClient): unknown[] {
  return client
    .takeEvents()
    .filter((e: QmpMessage) => e.event !== 'JOB_STATUS_CHANGE' && !String(e.event).startsWith('BLOCK_JOB_'))
    .map(({ event, data }: QmpMessage) => ({ event, data }));
}

async function converse(daemon: RunningDaemon, steps: Step[]): Promise<unknown[]> {
  const client = await QmpClient.connect(daemon.socket, { negotiate: true });
  const transcript: unknown[] = [];
  for (const step of steps) {
    if ('graph' in step) {
      // Wait for a cancelled job to be gone, as the harness did.
      for (let i = 0; i < 200 && ((await client.execute('query-jobs')).return as unknown[]).length > 0; i++) await sleep(10);
      transcript.push(await graphView(client));
    } else {
      const reply = await client.execute(step.execute, step.arguments);
      transcript.push(reply, ...otherEvents(client));
    }
  }
  await client.close();
  return transcript;
}

function expected(steps: Step[]): unknown[] {
  return steps.flatMap((step) => {
    if ('graph' in step) return [{ exports: step.graph.exports, nodes: Object.fromEntries(Object.entries(step.graph.nodes).sort()) }];
    return [step.reply, ...(step.events ?? [])];
  });
}

async function conversation(t: ExecutionContext, kind: 'qemu' | 'ours'): Promise<void> {
  const dir = await tempDir(t, `blocklayer-snapshot-qmp-${kind}-`);
  const image = (name: string, format: string, ...extra: string[]) => execFileSync('qemu-img', ['create', '-q', '-f', format, ...extra, join(dir, name), '4M']);
  for (const name of ['d.raw', 'e.raw', 't.raw']) image(name, 'raw');
  for (const name of ['o.qcow2', 'o2.qcow2', 'o3.qcow2', 'base.qcow2']) image(name, 'qcow2');
  image('top.qcow2', 'qcow2', '-b', join(dir, 'base.qcow2'), '-F', 'qcow2');
  const raw = (node: string, file: string) => `driver=raw,node-name=${node},file.driver=file,file.filename=${join(dir, file)}`;
  const qcow2 = (node: string, file: string) => `driver=qcow2,node-name=${node},file.driver=file,file.filename=${join(dir, file)}`;
  const daemon = await startDaemon(kind, [
    ...[raw('disk', 'd.raw'), raw('disk2', 'e.raw'), raw('tgt', 't.raw')],
    ...[qcow2('ov', 'o.qcow2'), qcow2('ov2', 'o2.qcow2'), qcow2('ov3', 'o3.qcow2')],
    `driver=qcow2,node-name=base,read-only=on,file.driver=file,file.filename=${join(dir, 'base.qcow2')}`,
    `driver=qcow2,node-name=top,backing=base,file.driver=file,file.filename=${join(dir, 'top.qcow2')}`,
  ].flatMap((spec) => ['--blockdev', spec]));
  t.teardown(() => daemon.stop());
  const steps = script(dir);
  const actual = await converse(daemon, steps);
  const want = expected(steps);
  for (const [i, item] of want.entries()) t.deepEqual(actual[i], item, `${kind}: item ${i}`);
  t.is(actual.length, want.length);
}

test('our daemon answers blockdev-snapshot(-sync) as qemu-storage-daemon 7.2 did', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  await conversation(t, 'ours');
});

test('qemu-storage-daemon still answers as recorded', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon') || !requirePeer(t, 'qemu-img')) return;
  await conversation(t, 'qemu');
});
