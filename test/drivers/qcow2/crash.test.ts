/**
 * Crash consistency (reference §9 case 25): a workload allocates data and
 * L2 tables, grows the L1 and refcount tables, and frees clusters. Before
 * every flush and at many writes, the image a power loss would leave (the
 * flushed state plus a random subset of the later writes) is checked:
 * `qemu-img check` may find leaks but never corruption, and before each
 * guest flush the data covered by the previous one reads back.
 */
import { readFile, writeFile } from 'node:fs/promises';
import test from 'ava';
import type { BlockNode } from '../../../core/block/block-node.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { CrashDisk, crashDiskPlugin, crashDisks } from './crash-disk.js';
import { KiB, MiB, pseudoRandom, qcow2Fixture, qemuCheck, requireQemu, run } from './fixture.js';

/** The guest view as the workload goes, and the ranges changed since the last completed flush. */
interface Shadow {
  data: Buffer;
  durable: Buffer;
  touched: [number, number][];
  /** The flush under way is the guest's (the end of a phase). */
  guestFlush: boolean;
}

/** The workload, phase by phase; each phase ends with a flush. */
async function workload(node: BlockNode, shadow: Shadow): Promise<void> {
  const write = async (offset: number, length: number, seed: number) => {
    const data = pseudoRandom(length, seed);
    shadow.touched.push([offset, offset + length]);
    await node.write(offset, data);
    data.copy(shadow.data, offset);
  };
  const zero = async (offset: number, length: number, discard: boolean) => {
    shadow.touched.push([offset, offset + length]);
    if (discard) await node.discard(offset, length);
    else await node.writeZeroes(offset, length, { mayUnmap: true });
    shadow.data.fill(0, offset, offset + length);
  };
  const phases: (() => Promise<void>)[] = [
    () => write(1000, 200 * KiB, 1),
    async () => {
      for (let i = 0; i < 24; i++) await write(i * 97 * KiB + 333, 3 * KiB, 10 + i);
    },
    async () => {
      shadow.touched.push([4 * MiB, 8 * MiB]);
      await node.truncate(8 * MiB);
      const grown = Buffer.alloc(8 * MiB);
      shadow.data.copy(grown);
      shadow.data = grown;
    },
    () => write(4 * MiB, 2 * MiB, 2),
    async () => {
      await zero(64 * KiB, 64 * KiB, true);
      await zero(4 * MiB + 7 * KiB, 300 * KiB, false);
      await write(100 * KiB, 50 * KiB, 3);
    },
    async () => {
      const text = Buffer.from('compressible qcow2 cluster data '.repeat(1024));
      shadow.touched.push([7 * MiB, 7 * MiB + text.length]);
      await node.write(7 * MiB, text, { compressed: true });
      text.copy(shadow.data, 7 * MiB);
    },
    // Normal writes into compressed clusters replace them and free their shared host clusters.
    () => write(7 * MiB + 1000, 5000, 4),
  ];
  for (const phase of phases) {
    await phase();
    shadow.guestFlush = true;
    await node.flush();
    shadow.guestFlush = false;
    shadow.durable = Buffer.from(shadow.data);
    shadow.touched = [];
  }
}

test('whatever a power loss leaves has at most leaked clusters, and flushed data reads back', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await f.create({ filename: f.path('fresh.qcow2'), size: 4 * MiB, cluster_size: 512, refcount_bits: 64 });
  const layer = await createTestLayer({ plugins: ['qcow2', crashDiskPlugin] });
  t.teardown(() => layer.close());
  const disk = new CrashDisk(await readFile(f.path('fresh.qcow2')));
  crashDisks.set('crash', disk);
  const shadow: Shadow = { data: Buffer.alloc(4 * MiB), durable: Buffer.alloc(4 * MiB), touched: [], guestFlush: false };
  let checked = 0;
  let seed = 1;
  disk.moment = async (kind) => {
    if ((kind === 'write' && disk.writes % 23 !== 0) || disk.pendingCount === 0) return;
    const keep = pseudoRandom(8192, seed++);
    const survivor = disk.survivor((i) => (keep[i % keep.length]! & 1) === 1);
    const expected = Buffer.from(shadow.durable);
    const touched = [...shadow.touched];
    const file = f.path('survivor.qcow2');
    checked++;
    await writeFile(file, survivor);
    const { code, report } = await qemuCheck(file);
    t.true(code === 0 || code === 3, `${kind} ${disk.writes}/${disk.flushes}: check exit ${code} ${JSON.stringify(report)}`);
    if (!shadow.guestFlush) return;
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, `${file}.raw`]);
    const survived = await readFile(`${file}.raw`);
    for (const [from, to] of touched) survived.copy(expected, from, from, Math.min(to, expected.length));
    const length = Math.min(expected.length, survived.length);
    t.true(survived.subarray(0, length).equals(expected.subarray(0, length)), `flush ${disk.flushes}: data flushed before reads back`);
  };
  const node = await layer.graph.add({ driver: 'qcow2', 'node-name': 'q', discard: 'unmap', file: { driver: 'crash-disk', disk: 'crash' } });
  await workload(node, shadow);
  await layer.graph.del('q');
  disk.moment = undefined;
  crashDisks.delete('crash');
  t.true(disk.survivor(() => true).readUInt32BE(56) > 1, 'the refcount table grew');
  t.log(`${checked} power-loss images checked over ${disk.writes} writes and ${disk.flushes} flushes`);
});
