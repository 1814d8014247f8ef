/**
 * qemu:dirty-bitmap:NAME over NBD, against qemu-storage-daemon 7.2 as the
 * oracle. Both daemons get the same image, the same bitmaps (64 KiB, 512
 * bytes, a disabled one), the same guest writes (qemu-io through an
 * export), then an export with `bitmaps`. Then the same probes to each:
 * LIST/SET_META_CONTEXT replies and BLOCK_STATUS replies byte for byte,
 * `nbdinfo --map=qemu:dirty-bitmap:NAME`, `qemu-img map` with
 * `x-dirty-bitmap` (QEMU's client), and our nbd client driver with
 * `x-dirty-bitmap`. Last, in-process: an exported bitmap is busy until
 * its export is gone; a name is found down the backing chain.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT_GO,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
} from '../../../core/protocols/nbd/constants.js';
import { encodeInfoRequest, encodeMetaContextRequest } from '../../../core/protocols/nbd/handshake.js';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { type RunningDaemon, startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { exportImage, KiB, MiB, ok, rawImage, serverFixture } from './fixture.js';
import { type Reply, RawNbdClient } from './raw-client.js';

const SIZE = 5 * MiB;
/** Guest writes made after the bitmaps were added: a byte, a write across two granules, zeroes, a discard (dropped: discard=ignore), the last 4 KiB. */
const WRITES = ['write 0 1', 'write 70000 1000', 'write -z 1M 64k', 'discard 2M 64k', 'write 3M 4096', 'write 5116k 4k'];

interface Side {
  kind: 'qemu' | 'ours';
  daemon: RunningDaemon;
  socket: string;
  uri(exp: string): string;
}

async function startSide(kind: 'qemu' | 'ours', dirs: string[]): Promise<Side> {
  const dir = await mkdtemp(join(tmpdir(), `blocklayer-nbd-bitmap-${kind}-`));
  dirs.push(dir);
  execFileSync('qemu-img', ['create', '-f', 'raw', join(dir, 'disk.raw'), String(SIZE)]);
  const daemon = await startDaemon(kind, [
    '--blockdev', `driver=file,node-name=f0,filename=${join(dir, 'disk.raw')}`,
    '--blockdev', 'driver=raw,node-name=r0,file=f0',
  ]);
  const socket = join(dir, 'nbd.sock');
  const side: Side = { kind, daemon, socket, uri: (exp) => `nbd+unix:///${exp}?socket=${socket}` };
  const qmp = await QmpClient.connect(daemon.socket, { negotiate: true });
  const step = async (command: string, args: Record<string, unknown>) => {
    const reply = await qmp.execute(command, args);
    if (reply.error !== undefined) throw new Error(`${kind}: ${command}: ${JSON.stringify(reply.error)}`);
  };
  await step('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
  await step('block-dirty-bitmap-add', { node: 'r0', name: 'b0' });
  await step('block-dirty-bitmap-add', { node: 'r0', name: 'b1', granularity: 512 });
  await step('block-dirty-bitmap-add', { node: 'r0', name: 'dis', disabled: true });
  await step('block-export-add', { type: 'nbd', id: 'w', 'node-name': 'r0', name: 'w', writable: true });
  await ok('qemu-io', ['-f', 'raw', ...WRITES.flatMap((c) => ['-c', c]), side.uri('w')]);
  await step('block-export-add', { type: 'nbd', id: 'bm', 'node-name': 'r0', name: 'bm', writable: true, bitmaps: ['b0', 'b1', 'dis', 'b0'] });
  await qmp.close();
  return side;
}

const dirs: string[] = [];
let pair: Promise<[Side, Side]> | undefined;
const sides = () => (pair ??= Promise.all([startSide('qemu', dirs), startSide('ours', dirs)]));

test.after.always(async () => {
  if (pair !== undefined) for (const side of await pair.catch(() => [])) await side.daemon.stop();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

const havePeers = (t: ExecutionContext, ...more: string[]) =>
  ['qemu-storage-daemon', 'qemu-img', 'qemu-io', ...more].every((peer) => requirePeer(t, peer));

const meta = (exp: string, queries: string[]) => encodeMetaContextRequest(exp, queries);
const PROBES: [number, Buffer?][] = [
  [NBD_OPT_LIST_META_CONTEXT, meta('bm', [])],
  [NBD_OPT_LIST_META_CONTEXT, meta('bm', ['qemu:'])],
  [NBD_OPT_LIST_META_CONTEXT, meta('bm', ['qemu:dirty-bitmap:'])],
  [NBD_OPT_LIST_META_CONTEXT, meta('bm', ['qemu:dirty-bitmap:b1', 'qemu:dirty-bitmap:nope', 'qemu:dirty-bitmap:b0', 'base:'])],
  [NBD_OPT_LIST_META_CONTEXT, meta('w', ['qemu:dirty-bitmap:', 'qemu:dirty-bitmap:b0'])],
  [NBD_OPT_STRUCTURED_REPLY],
  [NBD_OPT_SET_META_CONTEXT, meta('bm', ['qemu:dirty-bitmap:', 'qemu:', 'qemu:dirty-bitmap:b1'])],
  [NBD_OPT_SET_META_CONTEXT, meta('bm', ['qemu:dirty-bitmap:dis', 'qemu:dirty-bitmap:b1', 'qemu:dirty-bitmap:b0', 'qemu:dirty-bitmap:x'])],
  [NBD_OPT_GO, encodeInfoRequest('bm', [NBD_INFO_BLOCK_SIZE])],
];
/** [offset, length, flags] of the BLOCK_STATUS requests. */
const STATUS: [number, number, number][] = [
  [0, SIZE, 0],
  [0, SIZE, NBD_CMD_FLAG_REQ_ONE],
  [1, 512, 0],
  [69000, 2000, 0],
  [65536, MiB, NBD_CMD_FLAG_REQ_ONE],
  [100 * KiB, 2 * MiB, NBD_CMD_FLAG_REQ_ONE],
  [MiB + 100, 4096, 0],
  [4 * MiB, MiB, 0],
  [SIZE - 512, 512, NBD_CMD_FLAG_REQ_ONE],
];

const hex = (reply: Reply) => (reply.kind === 'simple' ? reply : reply.chunks.map((c) => ({ flags: c.flags, type: c.type, payload: c.payload.toString('hex') })));

/** Every option reply, then every BLOCK_STATUS reply, on one connection. */
async function converse(socket: string): Promise<unknown[]> {
  const client = await RawNbdClient.connect(socket);
  const transcript: unknown[] = [(await client.greet()).toString('hex')];
  for (const [option, data] of PROBES) {
    const replies = await client.option(option, data);
    transcript.push({ option, replies: replies.map((r) => ({ type: r.type.toString(16), payload: r.payload.toString('latin1') })) });
  }
  for (const [offset, length, flags] of STATUS) {
    client.request({ type: NBD_CMD_BLOCK_STATUS, offset, length, flags });
    transcript.push({ offset, length, flags, reply: hex(await client.reply()) });
  }
  client.destroy();
  return transcript;
}

test('LIST/SET_META_CONTEXT and BLOCK_STATUS of bitmap contexts are qemu-storage-daemon’s, byte for byte', async (t) => {
  if (!havePeers(t)) return;
  const [qemu, ours] = await sides();
  const [want, got] = await Promise.all([converse(qemu.socket), converse(ours.socket)]);
  t.is(got.length, want.length);
  for (const [i, item] of want.entries()) t.deepEqual(got[i], item, `item ${i}`);
});

test('nbdinfo --map=qemu:dirty-bitmap:NAME: the same map from both', async (t) => {
  if (!havePeers(t, 'nbdinfo')) return;
  const [qemu, ours] = await sides();
  for (const name of ['b0', 'b1', 'dis']) {
    const args = (side: Side) => [`--map=qemu:dirty-bitmap:${name}`, side.uri('bm')];
    const [want, got] = await Promise.all([ok('nbdinfo', args(qemu)), ok('nbdinfo', args(ours))]);
    t.is(got, want, name);
  }
  const b0 = await ok('nbdinfo', ['--map=qemu:dirty-bitmap:b0', ours.uri('bm')]);
  t.deepEqual(
    b0.trim().split('\n').map((line) => line.trim().split(/\s+/).slice(0, 3).map(Number)),
    [[0, 128 * KiB, 1], [128 * KiB, MiB - 128 * KiB, 0], [MiB, 64 * KiB, 1], [MiB + 64 * KiB, 2 * MiB - 64 * KiB, 0],
      [3 * MiB, 64 * KiB, 1], [3 * MiB + 64 * KiB, 2 * MiB - 128 * KiB, 0], [SIZE - 64 * KiB, 64 * KiB, 1]],
    'dirty: the granules written (not the discard); clean in between',
  );
});

test('qemu-img map with x-dirty-bitmap (QEMU’s client) sees the same from both', async (t) => {
  if (!havePeers(t)) return;
  const [qemu, ours] = await sides();
  for (const name of ['b0', 'b1']) {
    const args = (side: Side) => ['map', '--output=json', '--image-opts',
      `driver=nbd,export=bm,server.type=unix,server.path=${side.socket},x-dirty-bitmap=qemu:dirty-bitmap:${name}`];
    const [want, got] = await Promise.all([ok('qemu-img', args(qemu)), ok('qemu-img', args(ours))]);
    t.deepEqual(JSON.parse(got), JSON.parse(want), name);
  }
});

test('our nbd client driver reads the bitmap context alike from both (x-dirty-bitmap: dirty as "not data")', async (t) => {
  if (!havePeers(t)) return;
  const [qemu, ours] = await sides();
  const layer = await createTestLayer({ plugins: ['nbd'] });
  t.teardown(() => layer.close());
  let nodes = 0;
  const map = async (side: Side, name: string) => {
    const node = await layer.graph.add({
      driver: 'nbd', 'node-name': `${side.kind}-${name}-${++nodes}`, export: 'bm', server: { type: 'unix', path: side.socket },
      'x-dirty-bitmap': `qemu:dirty-bitmap:${name}`, 'read-only': true,
    });
    return (await node.blockStatus(0, node.length)).map(({ offset, length, data }) => ({ offset, length, data }));
  };
  for (const name of ['b0', 'b1', 'dis']) t.deepEqual(await map(ours, name), await map(qemu, name), name);
  t.deepEqual((await map(ours, 'b0')).filter((e) => !e.data).map((e) => [e.offset, e.length]), [
    [0, 128 * KiB], [MiB, 64 * KiB], [3 * MiB, 64 * KiB], [SIZE - 64 * KiB, 64 * KiB],
  ]);
});

test('an exported bitmap is busy (as QEMU shows it) until its export is gone; remove refused meanwhile', async (t) => {
  const f = await serverFixture(t, ['dirty-bitmap']);
  await rawImage(f.path('a.raw'), '1M');
  await exportImage(f, f.path('a.raw'), 'a', { writable: true });
  await f.execute('block-dirty-bitmap-add', { node: 'a', name: 'b0' });
  await f.execute('block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'a', name: 'e1', bitmaps: ['b0'], writable: true });
  const busy = async () => {
    const nodes = (await f.execute('query-named-block-nodes', { flat: true })) as Record<string, any>[];
    return nodes.find((n) => n['node-name'] === 'a')!['dirty-bitmaps'][0].busy as boolean;
  };
  t.true(await busy());
  await t.throwsAsync(f.execute('block-dirty-bitmap-remove', { node: 'a', name: 'b0' }), {
    message: "Bitmap 'b0' is currently in use by another operation and cannot be used",
  });
  const client = await RawNbdClient.connect(f.socket);
  const { contexts } = await client.handshake('e1', ['qemu:dirty-bitmap:b0']);
  t.deepEqual([...contexts], [['qemu:dirty-bitmap:b0', 2]]);
  await f.execute('block-export-del', { id: 'e1', mode: 'hard' });
  await client.closed;
  for (let i = 0; i < 200 && (await busy()); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  t.false(await busy(), 'busy no more once the export is deleted');
  await f.execute('block-dirty-bitmap-remove', { node: 'a', name: 'b0' });
});

test('a name is looked for down the backing chain; the bitmap’s writes show through the export', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'nbdinfo')) return;
  const f = await serverFixture(t, ['dirty-bitmap']);
  execFileSync('qemu-img', ['create', '-f', 'qcow2', f.path('base.qcow2'), '4M']);
  execFileSync('qemu-img', ['create', '-f', 'qcow2', '-b', f.path('base.qcow2'), '-F', 'qcow2', f.path('top.qcow2')]);
  await f.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'base', file: { driver: 'file', filename: f.path('base.qcow2') } });
  await f.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'top', backing: 'base', file: { driver: 'file', filename: f.path('top.qcow2') } });
  await f.execute('block-dirty-bitmap-add', { node: 'base', name: 'bb' });
  await f.layer.graph.node('base')!.write(2 * MiB, Buffer.alloc(4096, 1));
  await f.execute('block-dirty-bitmap-disable', { node: 'base', name: 'bb' });
  await f.execute('block-export-add', { type: 'nbd', id: 'top', 'node-name': 'top', bitmaps: ['bb'] });
  const map = await new Promise<string>((resolve, reject) =>
    execFile('nbdinfo', ['--map=qemu:dirty-bitmap:bb', f.uri('top')], (err, stdout) => (err ? reject(err) : resolve(stdout))),
  );
  t.deepEqual(map.trim().split('\n').map((line) => line.trim().split(/\s+/).slice(0, 3).map(Number)), [
    [0, 2 * MiB, 0], [2 * MiB, 64 * KiB, 1], [2 * MiB + 64 * KiB, 2 * MiB - 64 * KiB, 0],
  ]);
});
