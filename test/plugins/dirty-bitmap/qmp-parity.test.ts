/**
 * Dirty bitmaps over QMP, the same conversation with qemu-storage-daemon
 * 7.2 and with our daemon: every reply (error texts included), every
 * event, and the `dirty-bitmaps` of query-named-block-nodes after guest
 * writes made through an NBD export with qemu-io. QEMU's replies are
 * recorded with each step, so our daemon is held to them even where
 * qemu-storage-daemon is missing (QEMU is checked against the record when
 * it is there). Not in the script, on purpose: `persistent: true` on
 * qcow2 (QEMU stores the bitmap in the image, we refuse) and merging an
 * empty list (7.2 crashes).
 */
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { QmpClient, type QmpMessage } from '../../../core/qmp/qmp-client.js';
import { type RunningDaemon, startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const KiB = 1024;
const error = (desc: string) => ({ error: { class: 'GenericError', desc } });
const ok = { return: {} };
const inUse = (name: string) => error(`Bitmap '${name}' is currently in use by another operation and cannot be used`);
const notFound = (name: string) => error(`Dirty bitmap '${name}' not found`);
const deleted = (id: string) => ({ event: 'BLOCK_EXPORT_DELETED', data: { id } });

interface Bitmap {
  name: string;
  count: number;
  granularity?: number;
  recording?: boolean;
  busy?: boolean;
}

/** A `dirty-bitmaps` entry with QEMU's defaults for what a step leaves out. */
const bm = ({ name, count, granularity = 64 * KiB, recording = true, busy = false }: Bitmap) => ({ name, count, granularity, recording, busy, persistent: false });

type Step =
  | { execute: string; arguments?: Record<string, unknown>; reply: unknown; events?: unknown[] }
  /** query-named-block-nodes: the dirty bitmaps of each node that has any, by node name. */
  | { bitmaps: Record<string, Bitmap[]> }
  /** qemu-io commands through the export `exp`. */
  | { io: string[]; exp: string };

const add = (node: string, name: string, extra: Record<string, unknown> = {}, reply: unknown = ok): Step => ({
  execute: 'block-dirty-bitmap-add',
  arguments: { node, name, ...extra },
  reply,
});
const cmd = (verb: string, args: Record<string, unknown>, reply: unknown = ok): Step => ({ execute: `block-dirty-bitmap-${verb}`, arguments: args, reply });
const exportAdd = (args: Record<string, unknown>, reply: unknown = ok): Step => ({ execute: 'block-export-add', arguments: { type: 'nbd', ...args }, reply });
const txn = (actions: [string, Record<string, unknown>][], reply: unknown = ok): Step => ({
  execute: 'transaction',
  arguments: { actions: actions.map(([type, data]) => ({ type: type === 'abort' ? 'abort' : `block-dirty-bitmap-${type}`, data })) },
  reply,
});

function script(dir: string): Step[] {
  return [
    add('nosuch', 'b0', {}, error("Cannot find device='nosuch' nor node-name='nosuch'")),
    add('nosuch', '', {}, error('Bitmap name cannot be empty')),
    add('r0', 'b0', { granularity: 1000 }, error('Granularity must be power of 2 and at least 512')),
    add('r0', 'b0', { granularity: 256 }, error('Granularity must be power of 2 and at least 512')),
    add('r0', 'b0', { granularity: 0 }, error('Granularity must be power of 2 and at least 512')),
    add('r0', 'b0', { granularity: 2 ** 32 }, error("Parameter 'granularity' expects uint32_t")),
    add('r0', 'b0', { granularity: -1 }, error("Parameter 'granularity' expects uint32_t")),
    add('r0', 'b0', { persistent: true }, error("Can't store persistent bitmaps to r0: Operation not supported")),
    add('f0', 'b0', { persistent: true }, error("Can't store persistent bitmaps to f0: Operation not supported")),
    add('r0', 'b0'),
    add('r0', 'b0', {}, error('Bitmap already exists: b0')),
    add('r0', 'b1', { granularity: 512, persistent: false }),
    add('r0', 'dis', { disabled: true }),
    add('r0', 'huge', { granularity: 2 ** 31 }),
    add('r0', 'y'.repeat(1024), {}, error(`Bitmap name too long: ${'y'.repeat(1024)}`)),
    add('f0', 'fb'),
    add('big', 'bigb'),
    add('base', 'bb'),
    add('top', 'tb'),
    { execute: 'block-dirty-bitmap-add', arguments: { node: 'r0' }, reply: error("Parameter 'name' is missing") },
    ...['remove', 'clear', 'enable', 'disable'].flatMap((verb) => [
      cmd(verb, { node: 'r0', name: 'nosuch' }, notFound('nosuch')),
      cmd(verb, { node: 'zz', name: 'b0' }, error("Node 'zz' not found")),
    ]),
    cmd('remove', { node: 'r0', name: 'huge' }),
    { execute: 'nbd-server-start', arguments: { addr: { type: 'unix', data: { path: join(dir, 'nbd.sock') } } }, reply: ok },
    exportAdd({ id: 'w', 'node-name': 'r0', name: 'w', writable: true }),
    { io: ['write 0 1', 'write 70000 1000', 'write -z 1M 64k', 'discard 2M 64k', 'write 3M 4096'], exp: 'w' },
    {
      bitmaps: {
        r0: [{ name: 'dis', count: 0, recording: false }, { name: 'b1', count: 512 + 1536 + 64 * KiB + 4096, granularity: 512 }, { name: 'b0', count: 4 * 64 * KiB }],
        f0: [{ name: 'fb', count: 4 * 64 * KiB }],
        big: [{ name: 'bigb', count: 0 }],
        base: [{ name: 'bb', count: 0 }],
        top: [{ name: 'tb', count: 0 }],
      },
    },
    cmd('merge', { node: 'r0', target: 'nosuch', bitmaps: ['b0'] }, notFound('nosuch')),
    cmd('merge', { node: 'r0', target: 'dis', bitmaps: ['nosuch'] }, notFound('nosuch')),
    cmd('merge', { node: 'r0', target: 'dis', bitmaps: [{ node: 'zz', name: 'x' }] }, error("Node 'zz' not found")),
    cmd('merge', { node: 'r0', target: 'dis', bitmaps: [{ node: 'f0', name: 'x' }] }, notFound('x')),
    cmd('merge', { node: 'r0', target: 'dis', bitmaps: ['b0', 'nosuch'] }, notFound('nosuch')),
    cmd('merge', { node: 'r0', target: 'dis', bitmaps: [{ node: 'big', name: 'bigb' }, 'nosuch'] },
      error("Bitmaps are of different sizes (destination size is 4194304, source size is 8388608) and can't be merged")),
    cmd('merge', { node: 'r0', target: 'dis', bitmaps: [3] }, error("Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr")),
    cmd('merge', { node: 'r0', target: 'dis' }, error("Parameter 'bitmaps' is missing")),
    add('r0', 'kb', { granularity: 1024, disabled: true }),
    add('r0', 'cb', { granularity: 128 * KiB, disabled: true }),
    cmd('merge', { node: 'r0', target: 'kb', bitmaps: ['b0'] }),
    cmd('merge', { node: 'r0', target: 'cb', bitmaps: [{ node: 'f0', name: 'fb' }, 'b1'] }),
    cmd('merge', { node: 'r0', target: 'dis', bitmaps: ['dis'] }),
    {
      bitmaps: {
        r0: [
          { name: 'cb', count: 3 * 128 * KiB, granularity: 128 * KiB, recording: false },
          { name: 'kb', count: 4 * 64 * KiB, granularity: 1024, recording: false },
          { name: 'dis', count: 0, recording: false },
          { name: 'b1', count: 512 + 1536 + 64 * KiB + 4096, granularity: 512 },
          { name: 'b0', count: 4 * 64 * KiB },
        ],
        f0: [{ name: 'fb', count: 4 * 64 * KiB }],
        big: [{ name: 'bigb', count: 0 }],
        base: [{ name: 'bb', count: 0 }],
        top: [{ name: 'tb', count: 0 }],
      },
    },
    exportAdd({ id: 'e1', 'node-name': 'r0', name: 'e1', bitmaps: ['nosuch'] }, error("Bitmap 'nosuch' is not found")),
    exportAdd({ id: 'e1', 'node-name': 'r0', name: 'e1', bitmaps: ['fb'] }, error("Bitmap 'fb' is not found")),
    exportAdd({ id: 'e1', 'node-name': 'r0', name: 'e1', bitmaps: [{ node: 'f0', name: 'b0' }] }, notFound('b0')),
    exportAdd({ id: 'e1', 'node-name': 'r0', name: 'e1', bitmaps: [{ node: 'zz', name: 'b0' }] }, error("Node 'zz' not found")),
    exportAdd({ id: 'e1', 'node-name': 'r0', name: 'e1', bitmaps: ['dis', 'b0'] }, error("Enabled bitmap 'b0' incompatible with readonly export")),
    exportAdd({ id: 'e1', 'node-name': 'top', name: 'e1', bitmaps: ['tb'] }, error("Enabled bitmap 'tb' incompatible with readonly export")),
    exportAdd({ id: 'e1', 'node-name': 'top', name: 'e1', bitmaps: ['bb', { node: 'top', name: 'tb' }] }),
    exportAdd({ id: 'e2', 'node-name': 'r0', name: 'e2', writable: true, bitmaps: ['b0', 'b1', 'dis', 'b0'] }),
    exportAdd({ id: 'e3', 'node-name': 'r0', name: 'e3', writable: true, bitmaps: ['b0'] }, inUse('b0')),
    exportAdd({ id: 'e3', 'node-name': 'f0', name: 'e3', bitmaps: [{ node: 'f0', name: 'fb' }] }),
    { execute: 'nbd-server-add', arguments: { device: 'r0', name: 'na', bitmap: 'nosuch' }, reply: error("Bitmap 'nosuch' is not found") },
    { execute: 'nbd-server-add', arguments: { device: 'r0', name: 'na', bitmap: 'kb' }, reply: ok },
    { execute: 'nbd-server-add', arguments: { device: 'r0', name: 'nb', writable: true, bitmap: 'b1' }, reply: inUse('b1') },
    {
      bitmaps: {
        r0: [
          { name: 'cb', count: 3 * 128 * KiB, granularity: 128 * KiB, recording: false },
          { name: 'kb', count: 4 * 64 * KiB, granularity: 1024, recording: false, busy: true },
          { name: 'dis', count: 0, recording: false, busy: true },
          { name: 'b1', count: 512 + 1536 + 64 * KiB + 4096, granularity: 512, busy: true },
          { name: 'b0', count: 4 * 64 * KiB, busy: true },
        ],
        f0: [{ name: 'fb', count: 4 * 64 * KiB, busy: true }],
        big: [{ name: 'bigb', count: 0 }],
        base: [{ name: 'bb', count: 0, busy: true }],
        top: [{ name: 'tb', count: 0, busy: true }],
      },
    },
    ...['remove', 'clear', 'enable', 'disable'].map((verb) => cmd(verb, { node: 'r0', name: 'b0' }, inUse('b0'))),
    cmd('merge', { node: 'r0', target: 'b0', bitmaps: ['cb'] }, inUse('b0')),
    cmd('merge', { node: 'r0', target: 'cb', bitmaps: ['b0'] }, inUse('b0')),
    { io: ['write 2M 512'], exp: 'e2' },
    { execute: 'block-export-del', arguments: { id: 'e2' }, reply: ok, events: [deleted('e2')] },
    { execute: 'nbd-server-remove', arguments: { name: 'na' }, reply: ok, events: [deleted('na')] },
    {
      bitmaps: {
        r0: [
          { name: 'cb', count: 3 * 128 * KiB, granularity: 128 * KiB, recording: false },
          { name: 'kb', count: 4 * 64 * KiB, granularity: 1024, recording: false },
          { name: 'dis', count: 0, recording: false },
          { name: 'b1', count: 512 + 1536 + 64 * KiB + 4096 + 512, granularity: 512 },
          { name: 'b0', count: 5 * 64 * KiB },
        ],
        f0: [{ name: 'fb', count: 5 * 64 * KiB, busy: true }],
        big: [{ name: 'bigb', count: 0 }],
        base: [{ name: 'bb', count: 0, busy: true }],
        top: [{ name: 'tb', count: 0, busy: true }],
      },
    },
    txn([['add', { node: 'r0', name: 't1' }], ['clear', { node: 'r0', name: 'b0' }], ['enable', { node: 'r0', name: 'dis' }],
      ['merge', { node: 'r0', target: 'dis', bitmaps: ['b0', 'b1'] }], ['disable', { node: 'r0', name: 'b1' }],
      ['remove', { node: 'r0', name: 'kb' }], ['abort', {}]], error('Transaction aborted using Abort action')),
    txn([['clear', { node: 'r0', name: 'b0' }], ['add', { node: 'r0', name: 'z', granularity: 3 }]], error('Granularity must be power of 2 and at least 512')),
    txn([['remove', { node: 'r0', name: 'b0' }], ['clear', { node: 'r0', name: 'b0' }]], inUse('b0')),
    txn([['remove', { node: 'r0', name: 'b0' }], ['add', { node: 'r0', name: 'b0' }]], error('Bitmap already exists: b0')),
    txn([['add', { node: 'r0', name: 'n2' }], ['add', { node: 'r0', name: 'n2' }]], error('Bitmap already exists: n2')),
    txn([['remove', { node: 'r0', name: 'fb' }]], notFound('fb')),
    txn([['remove', { node: 'f0', name: 'fb' }]], inUse('fb')),
    {
      execute: 'transaction',
      arguments: { actions: [{ type: 'block-dirty-bitmap-add', data: { node: 'r0', name: 'g' } }], properties: { 'completion-mode': 'grouped' } },
      reply: error("Action 'block-dirty-bitmap-add' does not support Transaction property completion-mode = grouped"),
    },
    {
      bitmaps: {
        r0: [
          { name: 'cb', count: 3 * 128 * KiB, granularity: 128 * KiB, recording: false },
          { name: 'kb', count: 4 * 64 * KiB, granularity: 1024, recording: false },
          { name: 'dis', count: 0, recording: false },
          { name: 'b1', count: 512 + 1536 + 64 * KiB + 4096 + 512, granularity: 512 },
          { name: 'b0', count: 5 * 64 * KiB },
        ],
        f0: [{ name: 'fb', count: 5 * 64 * KiB, busy: true }],
        big: [{ name: 'bigb', count: 0 }],
        base: [{ name: 'bb', count: 0, busy: true }],
        top: [{ name: 'tb', count: 0, busy: true }],
      },
    },
    txn([['add', { node: 'r0', name: 'n2', disabled: true }], ['merge', { node: 'r0', target: 'n2', bitmaps: ['b0', 'cb'] }],
      ['enable', { node: 'r0', name: 'n2' }], ['clear', { node: 'r0', name: 'b0' }], ['disable', { node: 'r0', name: 'b1' }],
      ['remove', { node: 'r0', name: 'kb' }], ['remove', { node: 'r0', name: 'cb' }], ['remove', { node: 'r0', name: 'dis' }]]),
    { io: ['write 4032k 64k'], exp: 'w' },
    {
      bitmaps: {
        r0: [{ name: 'n2', count: 8 * 64 * KiB }, { name: 'b1', count: 512 + 1536 + 64 * KiB + 4096 + 512, granularity: 512, recording: false }, { name: 'b0', count: 64 * KiB }],
        f0: [{ name: 'fb', count: 6 * 64 * KiB, busy: true }],
        big: [{ name: 'bigb', count: 0 }],
        base: [{ name: 'bb', count: 0, busy: true }],
        top: [{ name: 'tb', count: 0, busy: true }],
      },
    },
    { execute: 'blockdev-del', arguments: { 'node-name': 'big' }, reply: ok },
    add('big', 'bigb', {}, error("Cannot find device='big' nor node-name='big'")),
    { execute: 'blockdev-add', arguments: { driver: 'file', 'node-name': 'big', filename: join(dir, 'big.raw') }, reply: ok },
    cmd('remove', { node: 'big', name: 'bigb' }, notFound('bigb')),
    { execute: 'quit', reply: ok, events: [deleted('w'), deleted('e1'), deleted('e3')] },
  ];
}

function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: 60_000 }, (err, _stdout, stderr) => (err ? reject(new Error(`${command}: ${stderr}`)) : resolve()));
  });
}

async function converse(daemon: RunningDaemon, steps: Step[], dir: string): Promise<unknown[]> {
  const client = await QmpClient.connect(daemon.socket, { negotiate: true });
  const transcript: unknown[] = [];
  for (const step of steps) {
    if ('io' in step) {
      await run('qemu-io', ['-f', 'raw', ...step.io.flatMap((c) => ['-c', c]), `nbd+unix:///${step.exp}?socket=${join(dir, 'nbd.sock')}`]);
    } else if ('bitmaps' in step) {
      const nodes = (await client.execute('query-named-block-nodes', { flat: true })).return as { 'node-name': string; 'dirty-bitmaps'?: unknown[] }[];
      transcript.push(Object.fromEntries(nodes.filter((n) => n['dirty-bitmaps'] !== undefined).map((n) => [n['node-name'], n['dirty-bitmaps']])));
    } else {
      const reply = await client.execute(step.execute, step.arguments);
      transcript.push(reply, ...client.takeEvents().map(({ event, data }: QmpMessage) => ({ event, data })));
    }
  }
  await client.close();
  return transcript;
}

function expected(steps: Step[]): unknown[] {
  return steps.flatMap((step) => {
    if ('io' in step) return [];
    if ('bitmaps' in step) return [Object.fromEntries(Object.entries(step.bitmaps).map(([node, list]) => [node, list.map(bm)]))];
    return [step.reply, ...(step.events ?? [])];
  });
}

async function conversation(t: ExecutionContext, kind: 'qemu' | 'ours'): Promise<void> {
  const dir = await tempDir(t, `blocklayer-bitmap-qmp-${kind}-`);
  const image = (name: string, format: string, size: string, ...extra: string[]) =>
    execFileSync('qemu-img', ['create', '-f', format, ...extra, join(dir, name), size]);
  image('disk.raw', 'raw', '4M');
  image('big.raw', 'raw', '8M');
  image('base.qcow2', 'qcow2', '4M');
  image('top.qcow2', 'qcow2', '4M', '-b', join(dir, 'base.qcow2'), '-F', 'qcow2');
  const daemon = await startDaemon(kind, [
    '--blockdev', `driver=file,node-name=f0,filename=${join(dir, 'disk.raw')}`,
    '--blockdev', 'driver=raw,node-name=r0,file=f0',
    '--blockdev', `driver=file,node-name=big,filename=${join(dir, 'big.raw')}`,
    '--blockdev', `driver=qcow2,node-name=base,read-only=on,file.driver=file,file.filename=${join(dir, 'base.qcow2')}`,
    '--blockdev', `driver=qcow2,node-name=top,backing=base,file.driver=file,file.filename=${join(dir, 'top.qcow2')}`,
  ]);
  t.teardown(() => daemon.stop());
  const steps = script(dir);
  const actual = await converse(daemon, steps, dir);
  const want = expected(steps);
  for (const [i, item] of want.entries()) t.deepEqual(actual[i], item, `${kind}: item ${i}`);
  t.is(actual.length, want.length);
}

test('our daemon answers the dirty bitmap commands as qemu-storage-daemon 7.2 did', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  await conversation(t, 'ours');
});

test('qemu-storage-daemon still answers as recorded', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon') || !requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  await conversation(t, 'qemu');
});

type Info = Record<string, any>;

/** A command's argument type from query-qmp-schema, masked names resolved into nested shapes. */
async function argumentTypes(kind: 'qemu' | 'ours', commands: string[]): Promise<unknown[]> {
  const daemon = await startDaemon(kind, []);
  try {
    const client = await QmpClient.connect(daemon.socket, { negotiate: true });
    const infos = (await client.execute('query-qmp-schema')).return as Info[];
    await client.close();
    const byName = new Map(infos.map((i) => [i.name as string, i]));
    const resolve = (name: string, depth = 0): unknown => {
      const info = byName.get(name)!;
      if (depth > 6) return info['meta-type'];
      switch (info['meta-type']) {
        case 'array':
          return { list: resolve(info['element-type'], depth + 1) };
        case 'alternate':
          return { alternate: info.members.map((m: Info) => resolve(m.type, depth + 1)) };
        case 'object':
          return { members: info.members.map((m: Info) => ({ name: m.name, optional: 'default' in m, type: resolve(m.type, depth + 1) })) };
        default:
          return name;
      }
    };
    return commands.map((name) => resolve(byName.get(name)!['arg-type']));
  } finally {
    await daemon.stop();
  }
}

test('the commands’ arguments introspect as qemu-storage-daemon 7.2’s', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon')) return;
  const commands = ['add', 'remove', 'clear', 'enable', 'disable', 'merge'].map((verb) => `block-dirty-bitmap-${verb}`);
  const [mine, qemu] = await Promise.all([argumentTypes('ours', commands), argumentTypes('qemu', commands)]);
  for (const [i, name] of commands.entries()) t.deepEqual(mine[i], qemu[i], name);
});
