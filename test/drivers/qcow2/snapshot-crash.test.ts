/**
 * Crash consistency of internal snapshots: while snapshots are created,
 * written around (copy on write of the clusters they share), applied and
 * deleted, the image a power loss would leave before every flush and at
 * many writes (the flushed state plus a random subset of the later writes)
 * is never unsafe; at the end every snapshot that was kept reads as the
 * image did when it was taken.
 *
 * Unsafe is what `qemu-img check` calls a corruption, but for the COPIED
 * flags QEMU's own order leaves behind for a moment: a refcount already
 * raised for a snapshot whose table entry is not written yet (the flag
 * still set, the cluster leaked: nothing else refers to it), or already
 * lowered while the flag is still clear (a write then copies needlessly).
 * A flag set on a cluster something else really refers to is unsafe: a
 * write would change the snapshot too.
 */
import { readFile, writeFile } from 'node:fs/promises';
import test from 'ava';
import { createTestLayer } from '../../../core/testing/index.js';
import { CrashDisk, crashDiskPlugin, crashDisks } from './crash-disk.js';
import { KiB, MiB, pseudoRandom, qcow2Fixture, qemuCheck, requireQemu, run, runStatus } from './fixture.js';

/** What `qemu-img check` reports that is unsafe (see above), given the cluster size. */
async function unsafeFindings(path: string, clusterSize: number): Promise<string[]> {
  const { stderr } = await runStatus('qemu-img', ['check', '-f', 'qcow2', path]);
  const lines = stderr.split('\n').filter((line) => line.startsWith('ERROR') || line.startsWith('Leaked'));
  const leakedOnce = new Set(lines.map((line) => /^Leaked cluster (\d+) refcount=\d+ reference=1$/.exec(line)?.[1]).filter((c) => c !== undefined));
  return lines.filter((line) => {
    if (line.startsWith('Leaked')) return false;
    const copied = /^ERROR OFLAG_COPIED (?:data|L2) cluster: (?:l2_entry|l1_index=\d+ l1_entry)=([0-9a-f]+) refcount=\d+$/.exec(line);
    if (copied === null) return true;
    const entry = BigInt(`0x${copied[1]}`);
    const cluster = String((entry & 0x00fffffffffffe00n) / BigInt(clusterSize));
    return entry >> 63n === 1n && !leakedOnce.has(cluster);
  });
}

// The second: lazy refcounts, and an L2 cache of two tables, which evicts tables changed by a snapshot.
for (const [options, cache] of [
  [{ cluster_size: 512 }, {}],
  [{ cluster_size: 1024, lazy_refcounts: true }, { 'l2-cache-size': 2048 }],
] as const) {
  test(`a power loss during snapshot operations leaves at most leaks (${JSON.stringify(options)})`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    await f.create({ filename: f.path('fresh.qcow2'), size: 2 * MiB, ...options });
    const layer = await createTestLayer({ plugins: ['qcow2', crashDiskPlugin] });
    t.teardown(() => layer.close());
    const disk = new CrashDisk(await readFile(f.path('fresh.qcow2')));
    crashDisks.set('crash', disk);
    let checked = 0;
    let seed = 1;
    disk.moment = async (kind) => {
      if ((kind === 'write' && disk.writes % 5 !== 0) || disk.pendingCount === 0) return;
      const keep = pseudoRandom(8192, seed++);
      const file = f.path('survivor.qcow2');
      await writeFile(file, disk.survivor((i) => (keep[i % keep.length]! & 1) === 1));
      checked++;
      t.deepEqual(await unsafeFindings(file, options.cluster_size), [], `${kind} ${disk.writes}/${disk.flushes}`);
    };
    const node = await layer.graph.add({ driver: 'qcow2', 'node-name': 'q', discard: 'unmap', ...cache, file: { driver: 'crash-disk', disk: 'crash' } });
    const content = Buffer.alloc(2 * MiB);
    const write = async (offset: number, length: number, seed: number) => {
      const data = pseudoRandom(length, seed);
      await node.write(offset, data);
      data.copy(content, offset);
    };
    const snapshot = async (name: string) => {
      await node.snapshotCreate({ name, dateSec: 0, dateNsec: 0 });
      return Buffer.from(content);
    };
    await write(1000, 300 * KiB, 1);
    const first = await snapshot('first');
    await write(100 * KiB, 200 * KiB, 2);
    const compressible = Buffer.from('compressible '.repeat(6000)).subarray(0, options.cluster_size);
    await node.write(1 * MiB, compressible, { compressed: true });
    compressible.copy(content, 1 * MiB);
    const second = await snapshot('second');
    await write(1 * MiB + 7 * KiB, 20 * KiB, 3);
    await node.snapshotGoto('first');
    first.copy(content);
    await write(1500 * KiB, 30 * KiB, 4);
    await node.snapshotDelete(undefined, 'first');
    await snapshot('third');
    await node.snapshotDelete('3', undefined);
    await node.flush();
    await layer.graph.del('q');
    disk.moment = undefined;
    crashDisks.delete('crash');

    const file = f.path('final.qcow2');
    await writeFile(file, disk.survivor(() => true));
    t.is((await qemuCheck(file)).code, 0, 'the final image is clean');
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, `${file}.raw`]);
    t.true((await readFile(`${file}.raw`)).equals(content), 'the image reads as written');
    await run('qemu-img', ['snapshot', '-a', 'second', file]);
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, `${file}.raw`]);
    t.true((await readFile(`${file}.raw`)).equals(second), 'the second snapshot reads as the image did then');
    t.log(`${checked} power-loss images checked over ${disk.writes} writes and ${disk.flushes} flushes`);
  });
}
