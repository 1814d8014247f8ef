/**
 * A partial write into a newly allocated cluster: where the file is known
 * to read as zeroes (grown since open, never written), only the data is
 * written, into the cluster zeroed first without writing (write-zeroes
 * without fallback: ZERO_RANGE), as QEMU's handle_alloc_space does; a
 * host cluster that was used before (freed, then allocated again) is
 * zeroed around the data as before, so old data never shows through.
 */
import test from 'ava';
import { assertClean, imageOf, KiB, MiB, nodeMap, qcow2Fixture, readNode, requireQemu, run, sameBytes } from './fixture.js';

const CLUSTER = 64 * KiB;

test('a 4 KiB write into a fresh cluster zeroes the cluster in the file, then writes 4 KiB', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('fresh.qcow2');
  await f.create({ filename: path, size: 4 * MiB });
  const node = await f.open(path);
  t.not(imageOf(node).freshFrom, undefined, 'a file node grows zeroed');
  const fileWrites: [string, number, number][] = [];
  node.children.get('file')!.node.hooks.beforeWrite.tapPromise('test', async (request) => {
    fileWrites.push([request.kind, request.offset, request.bytes]);
    return undefined;
  });
  await node.write(CLUSTER + 8 * KiB, Buffer.alloc(4 * KiB, 0x5a));
  const expected = Buffer.alloc(2 * CLUSTER);
  expected.fill(0x5a, CLUSTER + 8 * KiB, CLUSTER + 12 * KiB);
  sameBytes(t, await readNode(node, 0, 2 * CLUSTER), expected);
  const host = (await nodeMap(node)).find((r) => r.data)!.offset!;
  // As qemu-io's write: ZERO_RANGE over the new cluster (fallocate, nothing written), then the data alone.
  const data = fileWrites.filter(([, offset]) => offset >= host && offset < host + CLUSTER);
  t.deepEqual(data, [
    ['write-zeroes', host, CLUSTER],
    ['write', host + 8 * KiB, 4 * KiB],
  ]);
  await f.close();
  await assertClean(t, path);
  const io = await run('qemu-io', ['-f', 'qcow2', '-r', '-c', `read -P 0 ${CLUSTER} 8k`, '-c', `read -P 0x5a ${CLUSTER + 8 * KiB} 4k`, '-c', `read -P 0 ${CLUSTER + 12 * KiB} 52k`, path]);
  t.notRegex(io, /Pattern verification failed/);
});

test('a host cluster used before is zeroed around a partial write when it is allocated again', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('reused.qcow2');
  await f.create({ filename: path, size: 4 * MiB });
  // The file ignores discards, so a freed cluster keeps its old bytes in the file.
  const file = { driver: 'file', filename: path, cache: { 'no-flush': true }, discard: 'ignore' };
  const node = await f.open(path, { discard: 'unmap', file });
  await node.write(0, Buffer.alloc(CLUSTER, 0x11));
  const first = (await nodeMap(node)).find((r) => r.data)!.offset!;
  await node.discard(0, CLUSTER);
  // Frees wait until the L2 entries that dropped them are written: a flush does that.
  await node.flush();
  await node.write(2 * CLUSTER + 4 * KiB, Buffer.alloc(4 * KiB, 0x22));
  const second = (await nodeMap(node)).find((r) => r.data)!;
  t.is(second.offset, first, 'the freed host cluster was allocated again');
  const expected = Buffer.alloc(CLUSTER);
  expected.fill(0x22, 4 * KiB, 8 * KiB);
  sameBytes(t, await readNode(node, 2 * CLUSTER, CLUSTER), expected, 'none of the old 0x11 shows through');
  await f.close();
  await assertClean(t, path);
});
