/**
 * The NBD server's QMP commands, the same conversation with
 * qemu-storage-daemon 7.2 and with our daemon: every reply and every
 * BLOCK_EXPORT_DELETED event must match. The replies QEMU gave when this
 * was written are recorded with each step, so our daemon is held to them
 * even where qemu-storage-daemon is not installed (and QEMU's own answers
 * are checked against the record when it is). Last, the commands'
 * arguments as query-qmp-schema describes them, against QEMU's.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { QmpClient, type QmpMessage } from '../../../core/qmp/qmp-client.js';
import { type RunningDaemon, startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';
import { RawNbdClient } from './raw-client.js';

const error = (desc: string) => ({ error: { class: 'GenericError', desc } });
const ok = { return: {} };
const deleted = (...ids: string[]) => ids.map((id) => ({ event: 'BLOCK_EXPORT_DELETED', data: { id } }));
const info = (id: string, node: string, shuttingDown = false) => ({ id, type: 'nbd', 'node-name': node, 'shutting-down': shuttingDown });

interface Step {
  execute: string;
  arguments?: Record<string, unknown>;
  /** QEMU 7.2's reply. */
  reply: unknown;
  /** Events that arrive by the time of the reply (or the awaited one). */
  events?: unknown[];
  /** Before the command: connect a client to this export (it stays connected until the server drops it). */
  connect?: string;
  /** After the reply, wait for this many BLOCK_EXPORT_DELETED events. */
  awaitEvents?: number;
}

function script(dir: string): Step[] {
  const unix = { type: 'unix', data: { path: join(dir, 'nbd.sock') } };
  const add = (args: Record<string, unknown>, reply: unknown = ok): Step => ({ execute: 'block-export-add', arguments: { type: 'nbd', ...args }, reply });
  return [
    { execute: 'nbd-server-stop', reply: error('NBD server not running') },
    { execute: 'block-export-del', arguments: { id: 'nope' }, reply: error("Export 'nope' is not found") },
    { execute: 'query-block-exports', reply: { return: [] } },
    add({ id: 'e0', 'node-name': 'r0' }, error('NBD server not running')),
    add({ id: 'e0', 'node-name': 'nosuch' }, error("Cannot find device='' nor node-name='nosuch'")),
    add({ id: 'e0', 'node-name': 'ro0', writable: true }, error('Cannot export read-only node as writable')),
    add({ id: '1bad', 'node-name': 'r0' }, error('Invalid block export id')),
    add({ id: '', 'node-name': 'r0' }, error('Invalid block export id')),
    { execute: 'nbd-server-add', arguments: { device: 'nosuch' }, reply: error("Cannot find device='nosuch' nor node-name='nosuch'") },
    { execute: 'nbd-server-add', arguments: { device: 'r0' }, reply: error('NBD server not running') },
    { execute: 'nbd-server-start', arguments: { addr: { type: 'unix', path: join(dir, 'x.sock') } }, reply: error("Parameter 'addr.data' is missing") },
    { execute: 'nbd-server-start', arguments: { addr: unix, 'max-connections': -1 }, reply: error("Parameter 'max-connections' expects uint32_t") },
    { execute: 'nbd-server-start', arguments: { addr: { type: 'unix', data: { path: '/nonexistent/dir/s.sock' } } }, reply: error('Failed to bind socket to /nonexistent/dir/s.sock: No such file or directory') },
    { execute: 'nbd-server-start', arguments: { addr: { type: 'inet', data: { host: '127.0.0.1', port: 'abc' } } }, reply: error('address resolution failed for 127.0.0.1:abc: Servname not supported for ai_socktype') },
    { execute: 'nbd-server-start', arguments: { addr: unix }, reply: ok },
    { execute: 'nbd-server-start', arguments: { addr: unix }, reply: error('NBD server already running') },
    add({ id: 'e0', 'node-name': 'r0' }),
    add({ id: 'e0', 'node-name': 'r0' }, error("Block export id 'e0' is already in use")),
    add({ id: 'e1', 'node-name': 'r0' }, error("NBD server already has export named 'r0'")),
    add({ id: 'e1', 'node-name': 'r0', name: 'other', writable: true, description: 'the other one' }),
    add({ id: 'e2', 'node-name': 'r0', name: 'x'.repeat(4097) }, error(`export name '${'x'.repeat(4097)}' too long`)),
    add({ id: 'e2', 'node-name': 'r0', name: 'x', description: 'd'.repeat(4097) }, error(`description '${'d'.repeat(4097)}' too long`)),
    add({ id: 'e2', 'node-name': 'r0', name: 'x', bitmaps: ['b0'] }, error("Bitmap 'b0' is not found")),
    add({ id: 'e2', 'node-name': 'r0', name: 'x', bitmaps: [{ node: 'zz', name: 'b1' }] }, error("Node 'zz' not found")),
    add({ id: 'e2', 'node-name': 'r0', name: 'x', iothread: 'io0' }, error('iothread "io0" not found')),
    add({ id: 'e2', 'node-name': 'r0', name: '', 'fixed-iothread': true, writethrough: true, 'allocation-depth': true }),
    { execute: 'block-export-add', arguments: { type: 'bogus', id: 'e3', 'node-name': 'r0' }, reply: error("Parameter 'type' does not accept value 'bogus'") },
    { execute: 'query-block-exports', reply: { return: [info('e2', 'r0'), info('e1', 'r0'), info('e0', 'r0')] } },
    { execute: 'blockdev-del', arguments: { 'node-name': 'r0' }, reply: error('Node r0 is in use') },
    { execute: 'blockdev-del', arguments: { 'node-name': 'f0' }, reply: error('Block device f0 is in use') },
    { execute: 'block-export-del', arguments: { id: 'e1' }, reply: ok, events: deleted('e1') },
    { execute: 'nbd-server-add', arguments: { device: 'r0' }, reply: error("NBD server already has export named 'r0'") },
    { execute: 'nbd-server-add', arguments: { device: 'r0', name: 'r0b', writable: true, description: 'x' }, reply: ok },
    { execute: 'nbd-server-add', arguments: { device: 'r0', name: 'r0b' }, reply: error("Block export id 'r0b' is already in use") },
    { execute: 'nbd-server-remove', arguments: { name: 'nosuch' }, reply: error("Export 'nosuch' is not found") },
    { execute: 'nbd-server-remove', arguments: { name: 'r0b' }, reply: ok, events: deleted('r0b') },
    { execute: 'block-export-del', arguments: { id: 'e0', mode: 'foo' }, reply: error("Parameter 'mode' does not accept value 'foo'") },
    { execute: 'block-export-del', arguments: { id: 'e0' }, connect: 'r0', reply: error("export 'e0' still in use") },
    { execute: 'query-block-exports', reply: { return: [info('e2', 'r0'), info('e0', 'r0')] } },
    { execute: 'block-export-del', arguments: { id: 'e0', mode: 'hard' }, reply: ok, awaitEvents: 1, events: deleted('e0') },
    add({ id: 'e0', 'node-name': 'r0', name: 'again' }),
    // QEMU deletes exports with clients first (when the clients have gone), then the others oldest first.
    { execute: 'nbd-server-stop', connect: 'again', reply: ok, events: deleted('e0', 'e2') },
    { execute: 'nbd-server-stop', reply: error('NBD server not running') },
    { execute: 'query-block-exports', reply: { return: [] } },
    { execute: 'nbd-server-start', arguments: { addr: unix, 'max-connections': 2 }, reply: ok },
    add({ id: 'last', 'node-name': 'r0' }),
    add({ id: 'first', 'node-name': 'r0', name: 'first' }),
    { execute: 'quit', reply: ok, events: deleted('last', 'first') },
  ];
}

async function converse(daemon: RunningDaemon, steps: Step[], socket: string): Promise<unknown[]> {
  const client = await QmpClient.connect(daemon.socket, { negotiate: true });
  const transcript: unknown[] = [];
  const clients: RawNbdClient[] = [];
  for (const step of steps) {
    if (step.connect !== undefined) {
      const nbd = await RawNbdClient.connect(socket);
      await nbd.handshake(step.connect);
      clients.push(nbd);
    }
    const reply = await client.execute(step.execute, step.arguments);
    for (let i = 0; i < (step.awaitEvents ?? 0); i++) await client.waitEvent('BLOCK_EXPORT_DELETED').then((e) => transcript.push(strip(e)));
    const events = client.takeEvents().map(strip);
    transcript.push(reply, ...events);
  }
  for (const nbd of clients) nbd.destroy();
  await client.close();
  return transcript;
}

const strip = ({ event, data }: QmpMessage) => ({ event, data });

function expected(steps: Step[]): unknown[] {
  return steps.flatMap((step) => (step.awaitEvents ? [...(step.events ?? []), step.reply] : [step.reply, ...(step.events ?? [])]));
}

async function run(t: ExecutionContext, kind: 'qemu' | 'ours'): Promise<void> {
  const dir = await tempDir(t, `blocklayer-nbd-qmp-${kind}-`);
  const image = join(dir, 'disk.raw');
  execFileSync('qemu-img', ['create', '-f', 'raw', image, '4M']);
  const daemon = await startDaemon(kind, [
    '--blockdev', `driver=file,node-name=f0,filename=${image}`,
    '--blockdev', 'driver=raw,node-name=r0,file=f0',
    '--blockdev', `driver=file,node-name=ro0,filename=${image},read-only=on,force-share=on`,
  ]);
  t.teardown(() => daemon.stop());
  const steps = script(dir);
  const actual = await converse(daemon, steps, join(dir, 'nbd.sock'));
  const want = expected(steps);
  for (const [i, item] of want.entries()) t.deepEqual(actual[i], item, `${kind}: item ${i}`);
  t.is(actual.length, want.length);
}

test('our daemon answers the NBD server commands as qemu-storage-daemon 7.2 did', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  await run(t, 'ours');
});

test('qemu-storage-daemon still answers as recorded', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon') || !requirePeer(t, 'qemu-img')) return;
  await run(t, 'qemu');
});

type Info = Record<string, any>;

/** Masked type names resolved into nested shapes, so two query-qmp-schema outputs compare (as test/core/qmp/introspection.test.ts does). */
function resolver(infos: Info[]) {
  const byName = new Map(infos.map((i) => [i.name as string, i]));
  const resolve = (name: string, depth = 0): unknown => {
    const info = byName.get(name)!;
    if (depth > 6) return info['meta-type'];
    switch (info['meta-type']) {
      case 'enum':
        return { enum: info.values };
      case 'array':
        return { list: resolve(info['element-type'], depth + 1) };
      case 'alternate':
        return { alternate: info.members.map((m: Info) => resolve(m.type, depth + 1)) };
      case 'object':
        return {
          members: info.members.map((m: Info) => ({ name: m.name, optional: 'default' in m, type: resolve(m.type, depth + 1) })),
          ...(info.tag === undefined ? {} : { tag: info.tag, variants: info.variants.map((v: Info) => ({ case: v.case, type: resolve(v.type, depth + 1) })) }),
        };
      default:
        return name;
    }
  };
  const command = (name: string, part: 'arg-type' | 'ret-type') => resolve(byName.get(name)![part]);
  return { byName, command };
}

async function schema(kind: 'qemu' | 'ours'): Promise<ReturnType<typeof resolver>> {
  const daemon = await startDaemon(kind, []);
  try {
    const client = await QmpClient.connect(daemon.socket, { negotiate: true });
    const infos = (await client.execute('query-qmp-schema')).return as Info[];
    await client.close();
    return resolver(infos);
  } finally {
    await daemon.stop();
  }
}

test('the commands’ arguments introspect as qemu-storage-daemon 7.2’s', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon')) return;
  const [mine, qemu] = await Promise.all([schema('ours'), schema('qemu')]);
  for (const name of ['nbd-server-start', 'nbd-server-stop', 'nbd-server-add', 'nbd-server-remove', 'block-export-del']) {
    t.deepEqual(mine.command(name, 'arg-type'), qemu.command(name, 'arg-type'), name);
  }
  // Only the nbd export type exists here: its members (base, then the nbd branch's) are QEMU's, in QEMU's order.
  const nbdMembers = (r: ReturnType<typeof resolver>) => {
    const add = r.command('block-export-add', 'arg-type') as { members: Info[]; variants: { case: string; type: { members?: Info[] } }[] };
    return [...add.members.slice(1), ...(add.variants.find((v) => v.case === 'nbd')!.type.members ?? [])];
  };
  t.deepEqual(nbdMembers(mine), nbdMembers(qemu));
  const info = (r: ReturnType<typeof resolver>) => (r.command('query-block-exports', 'ret-type') as { list: { members: Info[] } }).list.members.map((m) => m.name);
  t.deepEqual(info(mine), info(qemu));
});
