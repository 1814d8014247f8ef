/**
 * Writing overlays and shared clusters (reference §9 case 22): partial
 * writes copy the rest of their cluster from the backing chain, v3 zero
 * writes hide backing data with zero clusters, v2 ones write zeroes; and
 * writes to an image with an internal snapshot copy the clusters it shares.
 */
import { readFile, writeFile } from 'node:fs/promises';
import test from 'ava';
import { createTestLayer } from '../../../core/testing/index.js';
import { RecordingControl, recordingPlugin } from '../../helpers/recording-driver.js';
import { assertClean, KiB, MiB, pseudoRandom, qcow2Fixture, readNode, requireQemu, run, runStatus, sameBytes } from './fixture.js';

for (const compat of ['1.1', '0.10'] as const) {
  test(`compat ${compat} overlay on a QEMU-made base: copy-on-write, zero writes, discard`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', f.path('base.qcow2'), '2M']);
    const base = pseudoRandom(2 * MiB, 5);
    await writeFile(f.path('base.raw'), base);
    await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'qcow2', f.path('base.raw'), f.path('base.qcow2')]);
    await f.create({ filename: f.path('top.qcow2'), backing_file: 'base.qcow2', backing_fmt: 'qcow2', compat, cluster_size: 16384 });
    const node = await f.open(f.path('top.qcow2'), { discard: 'unmap' });
    const expected = Buffer.concat([base, Buffer.alloc(0)]);
    const edit = async (offset: number, data: Buffer) => {
      await node.write(offset, data);
      data.copy(expected, offset);
    };
    await edit(100, Buffer.alloc(50, 0x11));
    await edit(16384 * 3 - 10, Buffer.alloc(30, 0x22));
    await edit(200 * KiB, pseudoRandom(100 * KiB, 9));
    await node.writeZeroes(512 * KiB + 1000, 40 * KiB);
    expected.fill(0, 512 * KiB + 1000, 552 * KiB + 1000);
    await node.writeZeroes(1 * MiB, 64 * KiB, { mayUnmap: true });
    expected.fill(0, 1 * MiB, 1 * MiB + 64 * KiB);
    await node.discard(1536 * KiB, 32 * KiB);
    // v3 discards leave zero clusters; v2 ones let the backing file show through again.
    if (compat === '1.1') expected.fill(0, 1536 * KiB, 1568 * KiB);
    sameBytes(t, await readNode(node), expected);
    await f.close();
    await assertClean(t, f.path('top.qcow2'));
    await writeFile(f.path('expected.raw'), expected);
    const compare = await runStatus('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', f.path('top.qcow2'), f.path('expected.raw')]);
    t.is(compare.code, 0, compare.stdout);
    const map = JSON.parse(await run('qemu-img', ['map', '--output=json', '-f', 'qcow2', f.path('top.qcow2')])) as { start: number; depth: number; zero: boolean; data: boolean }[];
    const at = (offset: number) => map.filter((e) => e.start <= offset).pop()!;
    t.like(at(1 * MiB), { depth: 0, zero: compat === '1.1', data: compat !== '1.1' });
    t.is(at(0).depth, 0);
  });
}

test('writes to an image with an internal snapshot copy the shared clusters; the snapshot keeps its data', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('s.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', path, '4M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x01 0 4M', path]);
  await run('qemu-img', ['snapshot', '-c', 'snap1', path]);
  const node = await f.open(path, { discard: 'unmap' });
  await node.write(100, Buffer.alloc(1000, 0x02));
  await node.write(1 * MiB, Buffer.alloc(128 * KiB, 0x03));
  await node.writeZeroes(2 * MiB, 64 * KiB, { mayUnmap: true });
  await node.discard(3 * MiB, 64 * KiB);
  await f.close();
  await assertClean(t, path);
  await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', '-l', 'snap1', path, f.path('snap.raw')]);
  sameBytes(t, await readFile(f.path('snap.raw')), Buffer.alloc(4 * MiB, 0x01), 'the snapshot is untouched');
  const io = await run('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0x02 100 1000', '-c', 'read -P 0x01 1100 64k', '-c', 'read -P 0x03 1M 128k', '-c', 'read -P 0 2M 64k', '-c', 'read -P 0 3M 64k', path]);
  t.notRegex(io, /Pattern verification failed/);
});

test('data writes to different clusters are in flight together, writes in place to one cluster too; allocating writes to one cluster take turns', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await f.create({ filename: f.path('p.qcow2'), size: 16 * MiB, preallocation: 'metadata' });
  const bytes = await readFile(f.path('p.qcow2'));
  const control = new RecordingControl();
  const layer = await createTestLayer({ plugins: ['qcow2', recordingPlugin(control)] });
  t.teardown(() => layer.close());
  const file = await layer.graph.add({ driver: 'recording', 'node-name': 'rec', size: bytes.length });
  await file.write(0, bytes);
  const node = await layer.graph.add({ driver: 'qcow2', 'node-name': 'q', file: 'rec' });
  const inFlight = async (writes: (() => Promise<void>)[], expected: number) => {
    control.hold();
    control.maxActive = 0;
    const started = writes.map((w) => w());
    while (control.active < expected) await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const active = control.active;
    control.release();
    await Promise.all(started);
    return active;
  };
  // Preallocated clusters are written in place, fresh ones (past the old end) after an allocation: both in parallel.
  await node.truncate(32 * MiB);
  t.is(await inFlight([0, 1, 2, 3].map((i) => () => node.write(i * MiB, Buffer.alloc(4096, i + 1))), 4), 4);
  t.is(await inFlight([20, 22].map((i) => () => node.write(i * MiB + 100, Buffer.alloc(100, i))), 2), 2);
  sameBytes(t, await readNode(node, 22 * MiB, 300), Buffer.concat([Buffer.alloc(100), Buffer.alloc(100, 22), Buffer.alloc(100)]));
  t.is(await inFlight([0, 1].map((i) => () => node.write(8 * MiB + i * 512, Buffer.alloc(512, 0x40 + i))), 2), 2, 'one cluster, in place: together');
  sameBytes(t, await readNode(node, 8 * MiB, 1024), Buffer.concat([Buffer.alloc(512, 0x40), Buffer.alloc(512, 0x41)]));
  t.is(await inFlight([0, 1].map((i) => () => node.write(24 * MiB + i * 512, Buffer.alloc(512, 0x50 + i))), 1), 1, 'one cluster, allocating: one at a time');
  sameBytes(t, await readNode(node, 24 * MiB, 1536), Buffer.concat([Buffer.alloc(512, 0x50), Buffer.alloc(512, 0x51), Buffer.alloc(512)]));
  for (let i = 0; i < 4; i++) sameBytes(t, await readNode(node, i * MiB, 4096), Buffer.alloc(4096, i + 1));
});
