/**
 * The BitmapStore on real nodes: writes, write-zeroes and discards marked
 * as QEMU marks them (failed ones too; discards dropped by discard=ignore
 * are not), a node without bitmaps left untapped, truncation followed,
 * bitmaps gone with their node, QEMU's default granularity, lookups and
 * their messages, and the search down filters and backing files that an
 * NBD export does.
 */
import test from 'ava';
import { ContainerModule } from 'inversify';
import type { BitmapStore } from '../../../core/bitmap/bitmap-store.js';
import { defineBlockDriver } from '../../../core/block/driver.js';
import type { NodeChild } from '../../../core/block/node-edge.js';
import { BlockIoError } from '../../../core/errors.js';
import type { Plugin } from '../../../core/plugin/plugin.js';
import { Qapi, type Static } from '../../../core/schema/qapi.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';

const KiB = 1024;
const MiB = 1024 * KiB;

const geometryOptions = Qapi.struct('BlockdevOptionsGeometry', {
  size: Qapi.size(),
  cluster: Qapi.optional(Qapi.size()),
  'fail-writes': Qapi.optional(Qapi.bool()),
});

/** A protocol driver with a cluster size of choice, whose writes can be made to fail after landing. */
const geometryDriver = defineBlockDriver<Static<typeof geometryOptions>, { data: Buffer; o: Static<typeof geometryOptions> }>({
  name: 'geometry',
  kind: 'protocol',
  summary: 'test driver with a chosen cluster size',
  options: geometryOptions,
  async open({ options }) {
    return { data: Buffer.alloc(options.size), o: options };
  },
  getLength: (s) => s.data.length,
  limits: (s) => ({ clusterSize: s.o.cluster ?? 0 }),
  read: async (s, offset, buf) => void s.data.copy(buf, 0, offset, offset + buf.length),
  write: async (s, offset, buf) => {
    buf.copy(s.data, offset);
    if (s.o['fail-writes']) throw new BlockIoError('EIO');
  },
});

const passFilter = defineBlockDriver<Record<string, never>, { file: NodeChild }>({
  name: 'pass-filter',
  kind: 'filter',
  summary: 'passes everything to its child',
  options: Qapi.struct('BlockdevOptionsPassFilter', {}),
  children: [{ name: 'file', required: true, filtered: true }],
  open: async ({ children }) => ({ file: children.get('file')! }),
  getLength: (s) => s.file.length,
});

const testDrivers: Plugin = {
  name: 'bitmap-test-drivers',
  version: '0.0.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.BlockDriverContribution).toConstantValue(geometryDriver);
    bind(TOKENS.BlockDriverContribution).toConstantValue(passFilter);
  }),
};

async function setup() {
  const layer = await createTestLayer({ plugins: ['qmp-block-commands', 'raw', testDrivers] });
  const store = layer.container.get<BitmapStore>(TOKENS.BitmapStore);
  const add = (options: Record<string, unknown>) => layer.graph.add(options);
  return { layer, store, add };
}

test('writes, write-zeroes and discards mark every enabled bitmap; a discard the node drops does not', async (t) => {
  const { store, add } = await setup();
  const node = await add({ driver: 'memory', 'node-name': 'm', size: 4 * MiB, discard: 'unmap' });
  const ignoring = await add({ driver: 'memory', 'node-name': 'i', size: 4 * MiB });
  const b0 = store.create(node, 'b0');
  const fine = store.create(node, 'fine', { granularity: 512 });
  const off = store.create(node, 'off', { enabled: false });
  const i0 = store.create(ignoring, 'i0');
  await node.write(70000, Buffer.alloc(1000, 1));
  await node.writeZeroes(MiB, 64 * KiB);
  await node.discard(2 * MiB, 4096);
  await ignoring.discard(2 * MiB, 4096);
  t.deepEqual([...b0.dirtyAreas(0, node.length)], [
    { offset: 64 * KiB, length: 64 * KiB },
    { offset: MiB, length: 64 * KiB },
    { offset: 2 * MiB, length: 64 * KiB },
  ]);
  t.is(fine.count, 1536 + 64 * KiB + 4096);
  t.is(off.count, 0);
  t.is(i0.count, 0, 'discard=ignore (the default, as in QEMU): nothing reaches the driver, nothing is marked');
  t.deepEqual(store.list(node).map((b) => b.name), ['off', 'fine', 'b0'], 'newest first');
});

test('a failed write is marked too (QEMU marks whatever was attempted)', async (t) => {
  const { store, add } = await setup();
  const node = await add({ driver: 'geometry', 'node-name': 'g', size: MiB, 'fail-writes': true });
  const b = store.create(node, 'b');
  await t.throwsAsync(node.write(0, Buffer.alloc(512)));
  t.is(b.count, 64 * KiB);
});

test('only nodes with bitmaps are tapped; the tap goes with the last bitmap', async (t) => {
  const { store, add } = await setup();
  const node = await add({ driver: 'memory', 'node-name': 'm', size: MiB });
  t.false(node.hooks.afterWrite.isUsed());
  const a = store.create(node, 'a');
  const b = store.create(node, 'b');
  t.true(node.hooks.afterWrite.isUsed());
  t.deepEqual(node.hooks.afterWrite.taps.map((tap) => tap.name), ['BitmapStore'], 'one tap for all the node’s bitmaps');
  store.release(a);
  t.true(node.hooks.afterWrite.isUsed());
  store.release(b);
  t.false(node.hooks.afterWrite.isUsed());
  await node.write(0, Buffer.alloc(512));
  t.is(b.count, 0, 'a released bitmap records nothing');
});

test('truncation resizes every bitmap of the node, disabled ones too', async (t) => {
  const { store, add } = await setup();
  const node = await add({ driver: 'memory', 'node-name': 'm', size: MiB });
  const on = store.create(node, 'on');
  const off = store.create(node, 'off', { enabled: false });
  await node.write(MiB - 512, Buffer.alloc(512));
  await node.truncate(2 * MiB);
  t.is(on.size, 2 * MiB);
  t.is(off.size, 2 * MiB);
  t.is(on.count, 64 * KiB, 'growing marks nothing');
  await node.truncate(MiB / 2);
  t.is(on.size, MiB / 2);
  t.is(on.count, 0, 'the dirty granule past the new end is gone');
});

test('bitmaps go away with their node', async (t) => {
  const { layer, store, add } = await setup();
  const node = await add({ driver: 'memory', 'node-name': 'm', size: MiB });
  store.create(node, 'b0');
  await layer.execute('blockdev-del', { 'node-name': 'm' });
  t.deepEqual(store.list(node), []);
  t.false(node.hooks.afterWrite.isUsed());
  await add({ driver: 'memory', 'node-name': 'm', size: MiB });
  t.throws(() => store.lookup('m', 'b0'), { message: "Dirty bitmap 'b0' not found" });
});

test('the default granularity is the cluster size within [4 KiB, 64 KiB], else 64 KiB', async (t) => {
  const { store, add } = await setup();
  const cases: [number | undefined, number][] = [[undefined, 64 * KiB], [512, 4 * KiB], [16 * KiB, 16 * KiB], [2 * MiB, 64 * KiB]];
  for (const [i, [cluster, granularity]] of cases.entries()) {
    const node = await add({ driver: 'geometry', 'node-name': `g${i}`, size: MiB, ...(cluster === undefined ? {} : { cluster }) });
    t.is(store.create(node, 'b').granularity, granularity, `cluster ${cluster}`);
  }
});

test('create refuses a duplicate and a name over 1023 bytes, with QEMU’s messages', async (t) => {
  const { store, add } = await setup();
  const node = await add({ driver: 'memory', 'node-name': 'm', size: MiB });
  store.create(node, 'b0');
  t.throws(() => store.create(node, 'b0'), { message: 'Bitmap already exists: b0' });
  t.notThrows(() => store.create(node, 'y'.repeat(1023)));
  t.throws(() => store.create(node, 'é'.repeat(512)), { message: `Bitmap name too long: ${'é'.repeat(512)}` });
});

test('lookup by node or device name, with block_dirty_bitmap_lookup’s messages', async (t) => {
  const { layer, store, add } = await setup();
  const node = await add({ driver: 'memory', 'node-name': 'm', size: MiB });
  const b0 = store.create(node, 'b0');
  layer.graph.attachBackend('dev0', node);
  t.is(store.lookup('m', 'b0'), b0);
  t.is(store.lookup('dev0', 'b0'), b0);
  t.throws(() => store.lookup('zz', 'b0'), { message: "Node 'zz' not found" });
  t.throws(() => store.lookup('m', 'nosuch'), { message: "Dirty bitmap 'nosuch' not found" });
});

test('findBelow follows filters and backing files, not a format’s file', async (t) => {
  const { layer, store, add } = await setup();
  const file = await add({ driver: 'memory', 'node-name': 'f', size: MiB });
  const raw = await add({ driver: 'raw', 'node-name': 'r', file: 'f' });
  const onFile = store.create(file, 'fb');
  const onRaw = store.create(raw, 'rb');
  const filter = await layer.graph.openFilter(passFilter, raw);
  t.is(store.findBelow(filter, 'rb'), onRaw);
  t.is(store.findBelow(raw, 'fb'), undefined, 'raw is a format, not a filter');
  t.is(store.findBelow(file, 'fb'), onFile);
});

test('query info: absent without bitmaps, QEMU’s members with', async (t) => {
  const { layer, store, add } = await setup();
  const node = await add({ driver: 'memory', 'node-name': 'm', size: MiB });
  t.is(store.info(node), undefined);
  const b = store.create(node, 'b0', { granularity: 512 });
  b.setBusy(true);
  await node.write(0, Buffer.alloc(1));
  const [info] = (await layer.execute('query-named-block-nodes', { flat: true })) as Record<string, unknown>[];
  t.deepEqual(info!['dirty-bitmaps'], [{ name: 'b0', count: 512, granularity: 512, recording: true, busy: true, persistent: false }]);
});
