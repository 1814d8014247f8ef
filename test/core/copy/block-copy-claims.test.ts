/**
 * The copy engine's rules for jobs that mark clusters again while they are
 * being copied (mirror): a claim never takes a cluster another copy moves
 * or a write holds, holds wait for copies in flight and for each other,
 * and claims take at most the length asked for.
 */
import test from 'ava';
import type { NodeChild } from '../../../core/block/node-edge.js';
import { ClusterBitmap } from '../../../core/bitmap/cluster-bitmap.js';
import { BlockCopy } from '../../../core/copy/block-copy.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { deferred } from '../../../core/util/deferred.js';

const CLUSTER = 65536;

async function engine(gate?: Promise<void>) {
  const layer = await createTestLayer({ plugins: [] });
  const src = await layer.graph.add({ driver: 'memory', 'node-name': 'src', size: 16 * CLUSTER });
  const tgt = await layer.graph.add({ driver: 'memory', 'node-name': 'tgt', size: 16 * CLUSTER });
  await src.write(0, Buffer.alloc(16 * CLUSTER, 1));
  const user = { parentName: 't', parentKind: 'job' as const };
  const source = layer.graph.attach(user, src, 'source');
  const target = layer.graph.attach(user, tgt, 'target');
  const slowTarget: NodeChild = Object.create(target, {
    write: { value: async (offset: number, buf: Buffer) => { await gate; return target.write(offset, buf); } },
  });
  const bitmap = new ClusterBitmap(CLUSTER, 16 * CLUSTER);
  return { copy: new BlockCopy({ source, target: slowTarget, bitmap, maxChunk: 4 * CLUSTER }), bitmap, tgt };
}

test('claims skip clusters in flight, and take at most the length asked for', async (t) => {
  const gate = deferred();
  const { copy, bitmap } = await engine(gate.promise);
  bitmap.fill();
  const first = copy.claimNext(0)!;
  t.deepEqual(first, { first: 0, end: 4 }, 'maxChunk by default');
  const moving = copy.copy(first);
  // The guest dirtied cluster 1 again while it is being copied: it is not claimed now.
  bitmap.set(1);
  t.deepEqual(copy.claimNext(0, 2 * CLUSTER), { first: 4, end: 6 });
  gate.resolve();
  await moving;
  t.deepEqual(copy.claimNext(0, 8 * CLUSTER), { first: 1, end: 2 }, 'once copied, it is claimed again');
});

test('a hold waits for the copies it overlaps and keeps claims and other holds off until released', async (t) => {
  const gate = deferred();
  const { copy, bitmap } = await engine(gate.promise);
  bitmap.fill();
  const moving = copy.copy(copy.claimNext(0, CLUSTER)!);
  let held = false;
  const holding = copy.hold(CLUSTER / 2, CLUSTER).then((release) => {
    held = true;
    return release;
  });
  await new Promise((r) => setImmediate(r));
  t.false(held, 'waits for the copy of cluster 0');
  gate.resolve();
  await moving;
  const release = await holding;
  t.true(held);
  t.deepEqual(copy.claimNext(0, 4 * CLUSTER), { first: 2, end: 6 }, 'clusters 0 and 1 are held (cluster 0 was copied, 1 is skipped)');
  let second = false;
  const next = copy.hold(CLUSTER, 1).then((r) => {
    second = true;
    r();
  });
  await new Promise((r) => setImmediate(r));
  t.false(second, 'a second hold waits for the first');
  release();
  await next;
  t.true(second);
  await copy.oneSettled();
  t.is(copy.inFlightCount, 0);
});
