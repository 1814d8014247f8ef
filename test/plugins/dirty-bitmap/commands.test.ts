/**
 * The block-dirty-bitmap-* commands and transaction actions on memory
 * nodes: what each does, QEMU 7.2's checks and messages (those that need
 * no peer; qmp-parity.test.ts holds the conversation against
 * qemu-storage-daemon), and transactions that commit or abort: an added
 * bitmap is gone after abort, a cleared or merged one has its contents
 * back (with the guest writes made meanwhile), enable/disable and remove
 * are undone.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import test from 'ava';
import { ContainerModule } from 'inversify';
import type { BitmapStore } from '../../../core/bitmap/bitmap-store.js';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { Plugin } from '../../../core/plugin/plugin.js';
import { Qapi, type Static } from '../../../core/schema/qapi.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';
import type { TransactionActionContribution } from '../../../core/transaction/transaction-action.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const KiB = 1024;
const MiB = 1024 * KiB;

const guestWriteData = Qapi.struct('XGuestWrite', { node: Qapi.str(), offset: Qapi.int() });

/** `x-guest-write`: a guest write to a node while the transaction is being prepared (and a failure, so it aborts). */
const guestWrite: Plugin = {
  name: 'x-guest-write',
  version: '0.0.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.TransactionActionContribution).toDynamicValue((c): TransactionActionContribution<Static<typeof guestWriteData>> => ({
      type: 'x-guest-write',
      data: guestWriteData,
      async prepare({ node, offset }) {
        await c.get<BlockLayer['graph']>(TOKENS.BlockGraph).node(node)!.write(offset, Buffer.alloc(512, 1));
        throw new Error('guest wrote, now abort');
      },
    }));
  }),
};

interface Info {
  name: string;
  count: number;
  granularity: number;
  recording: boolean;
  busy: boolean;
  persistent: boolean;
}

async function setup() {
  const layer = await createTestLayer({ plugins: ['dirty-bitmap', 'qmp-block-commands', 'transaction', 'abort', 'raw', 'file', 'qcow2', guestWrite] });
  await layer.execute('blockdev-add', { driver: 'memory', 'node-name': 'm', size: 4 * MiB });
  await layer.execute('blockdev-add', { driver: 'memory', 'node-name': 'big', size: 8 * MiB });
  const node = layer.graph.node('m')!;
  const execute = (command: string, args: Record<string, unknown> = {}) => layer.execute(command, args);
  const bitmaps = async (name = 'm'): Promise<Info[] | undefined> => {
    const nodes = (await execute('query-named-block-nodes', { flat: true })) as { 'node-name': string; 'dirty-bitmaps'?: Info[] }[];
    return nodes.find((n) => n['node-name'] === name)!['dirty-bitmaps'];
  };
  const counts = async () => Object.fromEntries((await bitmaps())?.map((b) => [b.name, b.count]) ?? []);
  const store = layer.container.get<BitmapStore>(TOKENS.BitmapStore);
  return { layer, node, execute, bitmaps, counts, store };
}

const action = (type: string, data: Record<string, unknown>) => ({ type: `block-dirty-bitmap-${type}`, data });
const abort = { type: 'abort', data: {} };

test('add: defaults, granularity, disabled; QEMU’s argument checks in QEMU’s order', async (t) => {
  const { execute, bitmaps } = await setup();
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'b0' });
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'b1', granularity: 512, disabled: true, persistent: false });
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'big', granularity: 2 ** 31 });
  t.deepEqual(await bitmaps(), [
    { name: 'big', count: 0, granularity: 2 ** 31, recording: true, busy: false, persistent: false },
    { name: 'b1', count: 0, granularity: 512, recording: false, busy: false, persistent: false },
    { name: 'b0', count: 0, granularity: 65536, recording: true, busy: false, persistent: false },
  ]);
  const refused: [Record<string, unknown>, string][] = [
    [{ node: 'nosuch', name: '' }, 'Bitmap name cannot be empty'],
    [{ node: 'nosuch', name: 'x' }, "Cannot find device='nosuch' nor node-name='nosuch'"],
    [{ node: 'm', name: 'x', granularity: 1000 }, 'Granularity must be power of 2 and at least 512'],
    [{ node: 'm', name: 'x', granularity: 256 }, 'Granularity must be power of 2 and at least 512'],
    [{ node: 'm', name: 'x', granularity: 0 }, 'Granularity must be power of 2 and at least 512'],
    [{ node: 'm', name: 'x', granularity: 2 ** 32 }, "Parameter 'granularity' expects uint32_t"],
    [{ node: 'm', name: 'x', granularity: 2 ** 32 - 1 }, 'Granularity must be power of 2 and at least 512'],
    [{ node: 'm', name: 'b0', granularity: 3 }, 'Granularity must be power of 2 and at least 512'],
    [{ node: 'm', name: 'x', persistent: true }, "Can't store persistent bitmaps to m: Operation not supported"],
    [{ node: 'm', name: 'b0' }, 'Bitmap already exists: b0'],
    [{ node: 'm', name: 'y'.repeat(1024) }, `Bitmap name too long: ${'y'.repeat(1024)}`],
    [{ node: 'm' }, "Parameter 'name' is missing"],
    [{ node: 'm', name: 'x', extra: 1 }, "Parameter 'extra' is unexpected"],
  ];
  for (const [args, message] of refused) await t.throwsAsync(execute('block-dirty-bitmap-add', args), { message }, JSON.stringify(args).slice(0, 60));
});

test('persistent bitmaps: qcow2 v3 stores them; v2 refuses them with QEMU 7.2\'s message, naming the node', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const { execute, bitmaps } = await setup();
  const dir = await tempDir(t, 'blocklayer-bitmap-');
  execFileSync('qemu-img', ['create', '-f', 'qcow2', '-o', 'compat=0.10', join(dir, 'v2.qcow2'), '4M']);
  execFileSync('qemu-img', ['create', '-f', 'qcow2', join(dir, 'v3.qcow2'), '4M']);
  await execute('blockdev-add', { driver: 'qcow2', 'node-name': 'v2', file: { driver: 'file', filename: join(dir, 'v2.qcow2') } });
  await execute('blockdev-add', { driver: 'qcow2', 'node-name': 'v3', file: { driver: 'file', filename: join(dir, 'v3.qcow2') } });
  await t.throwsAsync(execute('block-dirty-bitmap-add', { node: 'v2', name: 'p', persistent: true }), {
    message: "Can't make bitmap 'p' persistent in 'v2': Cannot store dirty bitmaps in qcow2 v2 files",
  });
  await execute('block-dirty-bitmap-add', { node: 'v2', name: 'p', persistent: false });
  await execute('block-dirty-bitmap-add', { node: 'v3', name: 'p', persistent: true });
  t.like((await bitmaps('v3'))![0], { name: 'p', persistent: true, recording: true });
  await t.throwsAsync(execute('block-dirty-bitmap-add', { node: 'v3', name: 'p', persistent: true }), { message: 'Bitmap already exists: p' });
});

test('guest writes are counted; clear, enable, disable, remove', async (t) => {
  const { node, execute, counts, bitmaps } = await setup();
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'b0' });
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'off', disabled: true });
  await node.write(0, Buffer.alloc(64 * KiB, 1));
  await node.write(MiB, Buffer.alloc(64 * KiB, 1));
  t.deepEqual(await counts(), { off: 0, b0: 128 * KiB });
  await execute('block-dirty-bitmap-enable', { node: 'm', name: 'off' });
  await execute('block-dirty-bitmap-enable', { node: 'm', name: 'off' });
  await node.write(2 * MiB, Buffer.alloc(512));
  await execute('block-dirty-bitmap-disable', { node: 'm', name: 'b0' });
  await node.write(3 * MiB, Buffer.alloc(512));
  t.deepEqual(await counts(), { off: 128 * KiB, b0: 192 * KiB });
  await execute('block-dirty-bitmap-clear', { node: 'm', name: 'b0' });
  t.deepEqual(await counts(), { off: 128 * KiB, b0: 0 });
  await execute('block-dirty-bitmap-remove', { node: 'm', name: 'off' });
  await execute('block-dirty-bitmap-remove', { node: 'm', name: 'b0' });
  t.is(await bitmaps(), undefined, 'no bitmaps: no dirty-bitmaps member');
  t.false(node.hooks.afterWrite.isUsed(), 'and no tap');
  for (const command of ['remove', 'clear', 'enable', 'disable']) {
    await t.throwsAsync(execute(`block-dirty-bitmap-${command}`, { node: 'm', name: 'b0' }), { message: "Dirty bitmap 'b0' not found" });
    await t.throwsAsync(execute(`block-dirty-bitmap-${command}`, { node: 'zz', name: 'b0' }), { message: "Node 'zz' not found" });
  }
});

test('a busy bitmap can be neither removed, cleared, enabled, disabled nor merged into or from', async (t) => {
  const { execute, store } = await setup();
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'busy' });
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'free' });
  store.lookup('m', 'busy').setBusy(true);
  const inUse = { message: "Bitmap 'busy' is currently in use by another operation and cannot be used" };
  for (const command of ['remove', 'clear', 'enable', 'disable']) {
    await t.throwsAsync(execute(`block-dirty-bitmap-${command}`, { node: 'm', name: 'busy' }), inUse, command);
  }
  await t.throwsAsync(execute('block-dirty-bitmap-merge', { node: 'm', target: 'busy', bitmaps: ['free'] }), inUse);
  await t.throwsAsync(execute('block-dirty-bitmap-merge', { node: 'm', target: 'free', bitmaps: ['busy'] }), inUse);
});

test('merge: sources by name or {node, name}, any granularity; QEMU 7.2’s order of checks; the target changes only if all pass', async (t) => {
  const { node, execute, counts, store } = await setup();
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'src' });
  await node.write(0, Buffer.alloc(1));
  await node.write(MiB, Buffer.alloc(64 * KiB));
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'fine', granularity: 1024, disabled: true });
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'coarse', granularity: 128 * KiB, disabled: true });
  await execute('block-dirty-bitmap-add', { node: 'big', name: 'bigb' });
  await execute('block-dirty-bitmap-merge', { node: 'm', target: 'fine', bitmaps: ['src'] });
  await execute('block-dirty-bitmap-merge', { node: 'm', target: 'coarse', bitmaps: [{ node: 'm', name: 'src' }, 'fine'] });
  t.deepEqual(await counts(), { coarse: 256 * KiB, fine: 64 * KiB + 64 * KiB, src: 128 * KiB });
  const busyTarget = store.lookup('m', 'coarse');
  busyTarget.setBusy(true);
  const cases: [Record<string, unknown>, string][] = [
    [{ target: 'nosuch', bitmaps: ['src'] }, "Dirty bitmap 'nosuch' not found"],
    [{ target: 'fine', bitmaps: ['nosuch'] }, "Dirty bitmap 'nosuch' not found"],
    [{ target: 'fine', bitmaps: [{ node: 'zz', name: 'x' }] }, "Node 'zz' not found"],
    [{ target: 'fine', bitmaps: [{ node: 'big', name: 'x' }] }, "Dirty bitmap 'x' not found"],
    [{ target: 'fine', bitmaps: ['src', 'nosuch'] }, "Dirty bitmap 'nosuch' not found"],
    [{ target: 'fine', bitmaps: [{ node: 'big', name: 'bigb' }, 'nosuch'] }, "Bitmaps are of different sizes (destination size is 4194304, source size is 8388608) and can't be merged"],
    [{ target: 'coarse', bitmaps: ['nosuch'] }, "Dirty bitmap 'nosuch' not found"],
    [{ target: 'coarse', bitmaps: [{ node: 'big', name: 'bigb' }] }, "Bitmap 'coarse' is currently in use by another operation and cannot be used"],
    [{ target: 'fine', bitmaps: ['src', 'coarse'] }, "Bitmap 'coarse' is currently in use by another operation and cannot be used"],
    [{ target: 'fine', bitmaps: [3] }, "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr"],
    [{ target: 'fine', bitmaps: [{ node: 'm' }] }, "Parameter 'bitmaps[0].name' is missing"],
  ];
  for (const [args, message] of cases) {
    await t.throwsAsync(execute('block-dirty-bitmap-merge', { node: 'm', ...args }), { message }, JSON.stringify(args));
  }
  t.deepEqual(await counts(), { coarse: 256 * KiB, fine: 128 * KiB, src: 128 * KiB }, 'failed merges changed nothing');
  await execute('block-dirty-bitmap-merge', { node: 'm', target: 'fine', bitmaps: [] });
  await t.throwsAsync(execute('block-dirty-bitmap-merge', { node: 'm', target: 'coarse', bitmaps: [] }), {
    message: "Bitmap 'coarse' is currently in use by another operation and cannot be used",
  });
  t.pass('an empty list merges nothing (qemu-storage-daemon 7.2 crashes on it)');
});

test('transaction commit: every action takes effect, in order', async (t) => {
  const { node, execute, counts, bitmaps } = await setup();
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'b0' });
  await node.write(0, Buffer.alloc(64 * KiB));
  await execute('transaction', {
    actions: [
      action('add', { node: 'm', name: 'n2', disabled: true }),
      action('merge', { node: 'm', target: 'n2', bitmaps: ['b0'] }),
      action('enable', { node: 'm', name: 'n2' }),
      action('clear', { node: 'm', name: 'b0' }),
      action('disable', { node: 'm', name: 'b0' }),
      action('add', { node: 'm', name: 'gone' }),
      action('remove', { node: 'm', name: 'gone' }),
    ],
  });
  t.deepEqual(await counts(), { n2: 64 * KiB, b0: 0 });
  t.deepEqual((await bitmaps())!.map((b) => [b.name, b.recording, b.busy]), [['n2', true, false], ['b0', false, false]]);
});

test('transaction abort: add undone, clear and merge restored, enable/disable and remove undone', async (t) => {
  const { node, execute, bitmaps } = await setup();
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'b0' });
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'b1', disabled: true });
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'b2', granularity: 512 });
  await node.write(0, Buffer.alloc(64 * KiB));
  await node.write(MiB, Buffer.alloc(64 * KiB));
  const before = await bitmaps();
  await t.throwsAsync(
    execute('transaction', {
      actions: [
        action('add', { node: 'm', name: 't1' }),
        action('clear', { node: 'm', name: 'b0' }),
        action('enable', { node: 'm', name: 'b1' }),
        action('merge', { node: 'm', target: 'b1', bitmaps: ['b0', 'b2'] }),
        action('disable', { node: 'm', name: 'b2' }),
        action('remove', { node: 'm', name: 'b2' }),
        abort,
      ],
    }),
    { message: 'Transaction aborted using Abort action' },
  );
  t.deepEqual(await bitmaps(), before);
  await t.throwsAsync(
    execute('transaction', { actions: [action('clear', { node: 'm', name: 'b0' }), action('add', { node: 'm', name: 'z', granularity: 3 })] }),
    { message: 'Granularity must be power of 2 and at least 512' },
  );
  t.deepEqual(await bitmaps(), before, 'a failing prepare aborts the actions before it');
});

test('transaction: a bitmap being removed is busy for the later actions; names are checked against what is prepared', async (t) => {
  const { execute, bitmaps } = await setup();
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'b0' });
  await t.throwsAsync(execute('transaction', { actions: [action('remove', { node: 'm', name: 'b0' }), action('clear', { node: 'm', name: 'b0' })] }), {
    message: "Bitmap 'b0' is currently in use by another operation and cannot be used",
  });
  await t.throwsAsync(execute('transaction', { actions: [action('remove', { node: 'm', name: 'b0' }), action('add', { node: 'm', name: 'b0' })] }), {
    message: 'Bitmap already exists: b0',
  });
  await t.throwsAsync(execute('transaction', { actions: [action('add', { node: 'm', name: 'n2' }), action('add', { node: 'm', name: 'n2' })] }), {
    message: 'Bitmap already exists: n2',
  });
  t.deepEqual((await bitmaps())!.map((b) => [b.name, b.busy]), [['b0', false]]);
  await execute('transaction', { actions: [action('remove', { node: 'm', name: 'b0' })] });
  t.is(await bitmaps(), undefined);
});

test('transaction: the bitmap actions refuse completion-mode grouped', async (t) => {
  const { execute } = await setup();
  for (const type of ['add', 'remove', 'clear', 'enable', 'disable', 'merge']) {
    await t.throwsAsync(
      execute('transaction', {
        actions: [action(type, type === 'merge' ? { node: 'm', target: 'nosuch', bitmaps: [] } : { node: 'm', name: 'nosuch' })],
        properties: { 'completion-mode': 'grouped' },
      }),
      { message: `Action 'block-dirty-bitmap-${type}' does not support Transaction property completion-mode = grouped` },
      type,
    );
  }
});

test('abort keeps the guest writes made while the transaction was prepared', async (t) => {
  const { node, execute, counts } = await setup();
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'b0' });
  await execute('block-dirty-bitmap-add', { node: 'm', name: 'b1' });
  await node.write(0, Buffer.alloc(512));
  await t.throwsAsync(
    execute('transaction', {
      actions: [
        action('clear', { node: 'm', name: 'b0' }),
        action('merge', { node: 'm', target: 'b1', bitmaps: [{ node: 'big', name: 'x' }] }),
      ],
    }),
    { message: "Dirty bitmap 'x' not found" },
  );
  t.deepEqual(await counts(), { b1: 64 * KiB, b0: 64 * KiB });
  await t.throwsAsync(
    execute('transaction', {
      actions: [action('clear', { node: 'm', name: 'b0' }), action('merge', { node: 'm', target: 'b0', bitmaps: ['b1'] }), { type: 'x-guest-write', data: { node: 'm', offset: 2 * MiB } }],
    }),
    { message: 'guest wrote, now abort' },
  );
  t.deepEqual(await counts(), { b1: 128 * KiB, b0: 128 * KiB }, 'cluster 0 restored, the write at 2 MiB kept');
});

test('bitmaps follow their node out: blockdev-del removes them', async (t) => {
  const { execute, store, layer } = await setup();
  await execute('block-dirty-bitmap-add', { node: 'big', name: 'b' });
  await execute('blockdev-del', { 'node-name': 'big' });
  await execute('blockdev-add', { driver: 'memory', 'node-name': 'big', size: MiB });
  t.deepEqual(store.list(layer.graph.node('big')!), []);
  await execute('block-dirty-bitmap-add', { node: 'big', name: 'b' });
  t.is(store.lookup('big', 'b').size, MiB);
});
