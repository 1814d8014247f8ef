/**
 * The transaction runner and command: order of prepare/commit/abort/clean,
 * rollback on failure (the abort action), a third-party action composed
 * with backups, grouped-mode rules, and atomicity across two disks.
 */
import test from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { journalPlugin } from '../../fixtures/journal-action/index.js';

const MiB = 1 << 20;

async function setup(journal: string[] = []): Promise<BlockLayer> {
  const layer = await createTestLayer({ plugins: ['qmp-block-commands', 'transaction', 'backup', 'abort', 'job-commands', journalPlugin(journal)] });
  for (const name of ['src', 'src2', 't1', 't2', 't3']) {
    await layer.execute('blockdev-add', { driver: 'memory', 'node-name': name, size: 4 * MiB });
  }
  await layer.graph.node('src')!.write(0, Buffer.alloc(4 * MiB, 0x5a));
  await layer.graph.node('src2')!.write(0, Buffer.alloc(4 * MiB, 0x6b));
  return layer;
}

const backup = (id: string, device: string, target: string, extra: Record<string, unknown> = {}) => ({
  type: 'blockdev-backup',
  data: { 'job-id': id, device, target, sync: 'full', ...extra },
});
const entry = (name: string, fail = false) => ({ type: 'x-journal', data: fail ? { name, fail } : { name } });

async function settled(layer: BlockLayer): Promise<void> {
  for (let i = 0; i < 500 && ((await layer.execute('query-jobs')) as unknown[]).length > 0; i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('a third-party action composes with backups: prepare in order, then commit all, then clean all', async (t) => {
  const journal: string[] = [];
  const layer = await setup(journal);
  await layer.execute('transaction', { actions: [entry('a'), backup('j1', 'src', 't1'), entry('b')] });
  t.deepEqual(journal, ['prepare a', 'prepare b', 'commit a', 'commit b', 'clean a', 'clean b']);
  await settled(layer);
  const copy = Buffer.alloc(4 * MiB);
  await layer.graph.node('t1')!.read(0, copy);
  t.true(copy.every((b) => b === 0x5a), 'the backup in the transaction ran');
});

test('an abort action rolls everything back in reverse: no job remains, targets untouched', async (t) => {
  const journal: string[] = [];
  const layer = await setup(journal);
  const statuses: string[] = [];
  layer.hooks.event.tap('test', (e) => statuses.push(`${String(e.data?.id ?? e.data?.device)}:${String(e.data?.status ?? e.event)}`));
  await t.throwsAsync(
    layer.execute('transaction', { actions: [entry('a'), backup('j1', 'src', 't1'), backup('j2', 'src2', 't2'), { type: 'abort', data: {} }] }),
    { message: 'Transaction aborted using Abort action' },
  );
  t.deepEqual(journal, ['prepare a', 'abort a', 'clean a'], 'the abort of a runs after the backups were undone, clean in order');
  t.deepEqual(statuses, ['j1:created', 'j2:created', 'j2:aborting', 'j2:concluded', 'j2:null', 'j1:aborting', 'j1:concluded', 'j1:null']);
  t.deepEqual(await layer.execute('query-jobs'), []);
  for (const target of ['t1', 't2']) {
    const data = Buffer.alloc(4 * MiB);
    await layer.graph.node(target)!.read(0, data);
    t.true(data.every((b) => b === 0), `${target} untouched`);
    t.is(layer.graph.node(target)!.parents.size, 0, `${target} is free again`);
  }
  t.deepEqual(layer.graph.list().map((n) => n.nodeName).sort(), ['src', 'src2', 't1', 't2', 't3'], 'the filters are gone');
  t.false(layer.graph.node('src')!.hooks.beforeWrite.isUsed(), 'copy-before-write is gone from the source');
});

test('the first failing prepare stops the loop; later actions are never attempted', async (t) => {
  const journal: string[] = [];
  const layer = await setup(journal);
  await t.throwsAsync(layer.execute('transaction', { actions: [entry('a'), entry('b', true), entry('c')] }), {
    message: 'journal entry b refused',
  });
  t.deepEqual(journal, ['prepare a', 'prepare b', 'abort a', 'clean a']);
});

test('argument errors are QEMU\'s; an empty transaction succeeds', async (t) => {
  const layer = await setup();
  t.deepEqual(await layer.execute('transaction', { actions: [] }), {});
  await t.throwsAsync(layer.execute('transaction', { actions: [{ type: 'abort' }] }), { message: "Parameter 'actions[0].data' is missing" });
  await t.throwsAsync(layer.execute('transaction', { actions: [{ type: 'foo', data: {} }] }), {
    message: "Parameter 'type' does not accept value 'foo'",
  });
  await t.throwsAsync(
    layer.execute('transaction', { actions: [entry('a')], properties: { 'completion-mode': 'grouped' } }),
    { message: "Action 'x-journal' does not support Transaction property completion-mode = grouped" },
  );
  await t.throwsAsync(
    layer.execute('transaction', { actions: [{ type: 'abort', data: {} }], properties: { 'completion-mode': 'grouped' } }),
    { message: 'Transaction aborted using Abort action' },
  );
});

test('a two-disk backup transaction takes one point in time across both disks', async (t) => {
  for (let round = 0; round < 20; round++) {
    const layer = await setup();
    const a = layer.graph.attachBackend('vdA', 'src');
    const b = layer.graph.attachBackend('vdB', 'src2');
    // The guest writes A, then B (ordered); the backup must never see B's write without A's.
    const guest = (async () => {
      await new Promise((r) => setTimeout(r, round % 5));
      await a.write(0, Buffer.alloc(4096, 1));
      await b.write(0, Buffer.alloc(4096, 2));
    })();
    await layer.execute('transaction', { actions: [backup('ja', 'src', 't1'), backup('jb', 'src2', 't2')] });
    await guest;
    await settled(layer);
    const [ta, tb] = [Buffer.alloc(1), Buffer.alloc(1)];
    await layer.graph.node('t1')!.read(0, ta);
    await layer.graph.node('t2')!.read(0, tb);
    const sawA = ta[0] === 1;
    const sawB = tb[0] === 2;
    t.false(sawB && !sawA, `round ${round}: B's later write is in the backup but A's earlier one is not`);
  }
});
