/**
 * block_resize over QMP, the same conversation with qemu-storage-daemon 7.2
 * and with our daemon: argument errors, sizes that work, what refuses a
 * resize (a read-only node, a format node over its file, an export, a
 * backing link, a mirror job's source and target until the job is gone, a
 * driver that cannot resize) and the sizes query-named-block-nodes shows
 * afterwards, a qcow2 image shrunk and grown again among them. QEMU's
 * replies are recorded with each step. Left out on purpose: sizes above 2^53 (not exact in JavaScript numbers), and sizes that are
 * not a multiple of 512 (QEMU reports the size of such a file rounded up). The `device`
 * form needs a device, which qemu-storage-daemon has none of: it is
 * tested in-process at the end, with QEMU's rules from its source.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { BlockLayerError } from '../../../core/errors.js';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { havePeers, openChainSession } from '../../helpers/chain-session.js';
import { type RunningDaemon, startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const MiB = 1024 * 1024;
const ok = { return: {} };
const error = (desc: string) => ({ error: { class: 'GenericError', desc } });
const notFound = (device: string, node: string) => error(`Cannot find device='${device}' nor node-name='${node}'`);
const conflict = (node: string, by: string, role = 'root') =>
  error(
    `Permission conflict on node '${node}': permissions 'resize' are both required by an unnamed block device ` +
      `(uses node '${node}' as 'root' child) and unshared by ${by} (uses node '${node}' as '${role}' child).`,
  );
const inUse = error("Device '(null)' is in use");

type Step =
  | { execute: string; arguments?: Record<string, unknown>; reply: unknown }
  /** Waits for the event (other events are dropped). */
  | { wait: string }
  /** query-named-block-nodes: the virtual size of these nodes. */
  | { sizes: Record<string, number> };

const resize = (args: Record<string, unknown>, reply: unknown = ok): Step => ({ execute: 'block_resize', arguments: args, reply });
const node = (name: string, size: number, reply: unknown = ok): Step => resize({ 'node-name': name, size }, reply);
const add = (args: Record<string, unknown>): Step => ({ execute: 'blockdev-add', arguments: args, reply: ok });

function script(dir: string): Step[] {
  const file = (name: string, extra: Record<string, unknown> = {}) => add({ driver: 'file', 'node-name': name, filename: join(dir, `${name}.img`), ...extra });
  const raw = (name: string, extra: Record<string, unknown> = {}) =>
    add({ driver: 'raw', 'node-name': name, file: { driver: 'file', filename: join(dir, `${name}.img`) }, ...extra });
  return [
    raw('r'),
    raw('ro', { 'read-only': true }),
    file('af'),
    add({ driver: 'raw', 'node-name': 'a', file: 'af' }),
    file('bf'),
    add({ driver: 'raw', 'node-name': 'b', file: 'bf', offset: 512 }),
    file('qf'),
    add({ driver: 'qcow2', 'node-name': 'q', file: 'qf' }),
    add({ driver: 'qcow2', 'node-name': 'top', file: { driver: 'file', filename: join(dir, 'top.img') }, backing: { driver: 'qcow2', 'node-name': 'base', file: { driver: 'file', filename: join(dir, 'base.img') } } }),
    add({ driver: 'null-co', 'node-name': 'nul' }),
    raw('src'),
    raw('tgt'),
    { execute: 'block_resize', arguments: {}, reply: error("Parameter 'size' is missing") },
    resize({ size: 1 }, notFound('', '')),
    resize({ device: 'nosuch', size: 512 }, notFound('nosuch', '')),
    resize({ device: 'r', size: 512 }, notFound('r', '')),
    node('nosuch', -1, notFound('', 'nosuch')),
    node('r', -1, error("Parameter 'size' expects a >0 size")),
    resize({ 'node-name': 'r', size: 1.5 }, error("Invalid parameter type for 'size', expected: integer")),
    resize({ 'node-name': 'r', size: '1' }, error("Invalid parameter type for 'size', expected: integer")),
    node('r', 1536),
    { sizes: { r: 1536 } },
    node('r', 0),
    { sizes: { r: 0 } },
    resize({ device: 'r', 'node-name': 'r', size: 2 * MiB }),
    node('ro', 2 * MiB, error('Image is read-only')),
    node('af', 2 * MiB),
    node('bf', 2 * MiB, conflict('bf', "node 'b'", 'file')),
    node('b', 2 * MiB),
    node('qf', 2 * MiB, conflict('qf', "node 'q'", 'file')),
    node('q', 2 * MiB + 1, error('The new size must be a multiple of 512')),
    node('q', 3 * MiB),
    node('q', 512 * 1024),
    { sizes: { q: 512 * 1024 } },
    node('q', 3 * MiB),
    node('base', 2 * MiB, inUse),
    { execute: 'blockdev-del', arguments: { 'node-name': 'base' }, reply: error("Node 'base' is busy: node is used as backing hd of 'top'") },
    node('top', 2 * MiB),
    node('nul', 2 * MiB, error('Image format driver does not support resize')),
    { sizes: { r: 2 * MiB, ro: MiB, a: 2 * MiB, af: 2 * MiB, b: 2 * MiB, bf: 2 * MiB + 512, q: 3 * MiB, top: 2 * MiB, base: MiB, nul: 2 ** 30 } },
    { execute: 'nbd-server-start', arguments: { addr: { type: 'unix', data: { path: join(dir, 'nbd.sock') } } }, reply: ok },
    { execute: 'block-export-add', arguments: { type: 'nbd', id: 'e1', 'node-name': 'ro' }, reply: ok },
    node('ro', 2 * MiB, conflict('ro', 'an unnamed block device')),
    { execute: 'block-export-add', arguments: { type: 'nbd', id: 'e2', 'node-name': 'a', writable: true }, reply: ok },
    node('a', 4 * MiB, conflict('a', 'an unnamed block device')),
    node('af', 4 * MiB, conflict('af', "node 'a'", 'file')),
    // Exports are not devices: query-block lists none.
    { execute: 'query-block', reply: { return: [] } },
    { execute: 'blockdev-mirror', arguments: { 'job-id': 'j', device: 'src', target: 'tgt', sync: 'full', 'auto-finalize': false, 'auto-dismiss': false }, reply: ok },
    { wait: 'BLOCK_JOB_READY' },
    node('src', 65536, inUse),
    node('tgt', 65536, inUse),
    { execute: 'job-complete', arguments: { id: 'j' }, reply: ok },
    { wait: 'BLOCK_JOB_PENDING' },
    node('src', 65536, inUse),
    node('tgt', 65536, inUse),
    { execute: 'job-finalize', arguments: { id: 'j' }, reply: ok },
    { wait: 'BLOCK_JOB_COMPLETED' },
    { execute: 'job-dismiss', arguments: { id: 'j' }, reply: ok },
    node('src', 65536),
    node('tgt', 3 * MiB),
    { sizes: { src: 65536, tgt: 3 * MiB } },
  ];
}

async function converse(daemon: RunningDaemon, steps: Step[]): Promise<unknown[]> {
  const client = await QmpClient.connect(daemon.socket, { negotiate: true });
  const transcript: unknown[] = [];
  for (const step of steps) {
    if ('wait' in step) {
      await client.waitEvent(step.wait);
      client.takeEvents();
    } else if ('sizes' in step) {
      const nodes = (await client.execute('query-named-block-nodes', { flat: true })).return as { 'node-name': string; image: { 'virtual-size': number } }[];
      transcript.push(Object.fromEntries(Object.keys(step.sizes).map((name) => [name, nodes.find((n) => n['node-name'] === name)?.image['virtual-size']])));
    } else {
      transcript.push(await client.execute(step.execute, step.arguments));
    }
  }
  await client.close();
  return transcript;
}

async function conversation(t: ExecutionContext, kind: 'qemu' | 'ours'): Promise<void> {
  const dir = await tempDir(t, `blocklayer-resize-${kind}-`);
  const image = (name: string, format: string, ...extra: string[]) => execFileSync('qemu-img', ['create', '-q', '-f', format, ...extra, join(dir, `${name}.img`), '1M']);
  for (const name of ['r', 'ro', 'af', 'bf', 'src', 'tgt']) image(name, 'raw');
  image('qf', 'qcow2');
  image('base', 'qcow2');
  image('top', 'qcow2', '-b', join(dir, 'base.img'), '-F', 'qcow2');
  const daemon = await startDaemon(kind, []);
  t.teardown(() => daemon.stop());
  const steps = script(dir);
  const actual = await converse(daemon, steps);
  const want = steps.flatMap((step) => ('wait' in step ? [] : ['sizes' in step ? step.sizes : step.reply]));
  for (const [i, item] of want.entries()) t.deepEqual(actual[i], item, `${kind}: item ${i}`);
  t.is(actual.length, want.length);
}

test('our daemon answers block_resize as qemu-storage-daemon 7.2 did', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  await conversation(t, 'ours');
});

test('qemu-storage-daemon still answers block_resize as recorded', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon') || !requirePeer(t, 'qemu-img')) return;
  await conversation(t, 'qemu');
});

test('by device: the node the device is attached to, a job\'s filter included; a raw node over it follows', async (t) => {
  if (!havePeers(t)) return;
  const s = await openChainSession(['mirror']);
  t.teardown(() => s.close());
  s.image('img', '1M');
  await s.add('img');
  await s.layer.execute('blockdev-add', { driver: 'raw', 'node-name': 'view', file: 'img' });
  const device = s.layer.graph.attachBackend('drive0', 'img');
  await s.layer.execute('block_resize', { device: 'drive0', size: 2 * MiB });
  t.is(device.length, 2 * MiB);
  t.is(s.layer.graph.node('view')!.length, 2 * MiB, 'raw without offset shows its file\'s new size');
  const [drive] = await s.layer.execute<Record<string, any>[]>('query-block');
  t.is(drive!.inserted.image['virtual-size'], 2 * MiB);
  await s.layer.execute('blockdev-del', { 'node-name': 'view' });
  // The device is on the mirror's filter now; the job blocks resizing it (QEMU: the job's main node).
  s.image('big', '2M');
  await s.add('big');
  await s.layer.execute('blockdev-mirror', { device: 'drive0', target: 'big', sync: 'full', speed: 1024 });
  const error = await t.throwsAsync<BlockLayerError>(s.layer.execute('block_resize', { device: 'drive0', size: 4 * MiB }));
  t.is(error?.message, "Device 'drive0' is in use");
  await s.layer.execute('block-job-cancel', { device: 'drive0', force: true });
  await s.log.status('drive0', 'null');
  await s.layer.execute('block_resize', { device: 'drive0', size: 4 * MiB });
  t.is(device.length, 4 * MiB);
});
