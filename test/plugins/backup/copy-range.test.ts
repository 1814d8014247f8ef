/**
 * blockdev-backup with x-perf.use-copy-range (QEMU's block-copy with
 * copy_range) between file nodes: the data reaches the target's file as
 * offloaded copies (writes without a buffer), guest writes during the job
 * still find their old data on the target, and the target is the source
 * at the point in time. From a source that cannot offload (memory), the
 * job falls back to reading and writing, as QEMU's does.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { BlockNode } from '../../../core/block/block-node.js';
import type { WriteRequest } from '../../../core/block/request.js';
import type { BlockLayerEvent } from '../../../core/hooks/block-layer-hooks.js';
import { createTestLayer } from '../../../core/testing/index.js';

const CLUSTER = 64 * 1024;
const SIZE = 64 * CLUSTER;

async function setUp(t: ExecutionContext, sourceDriver: 'file' | 'memory') {
  const layer = await createTestLayer({ plugins: ['backup', 'job-commands', 'file', 'raw'] });
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-backup-copy-range-'));
  t.teardown(async () => {
    await layer.lifecycle.requestShutdown('test over');
    await layer.close();
    await rm(dir, { recursive: true, force: true });
  });
  const original = randomBytes(SIZE);
  let src: BlockNode;
  if (sourceDriver === 'file') {
    await writeFile(join(dir, 'src.raw'), original);
    src = await layer.graph.add({ driver: 'raw', 'node-name': 'src', file: { driver: 'file', filename: join(dir, 'src.raw') } });
  } else {
    src = await layer.graph.add({ driver: 'memory', 'node-name': 'src', size: SIZE });
    await src.write(0, original);
  }
  await writeFile(join(dir, 'tgt.raw'), Buffer.alloc(SIZE));
  const tgt = await layer.graph.add({ driver: 'raw', 'node-name': 'tgt', file: { driver: 'file', 'node-name': 'tgt-file', filename: join(dir, 'tgt.raw') } });
  const dev = layer.graph.attachBackend('virtio0', src);
  const writes: WriteRequest[] = [];
  layer.graph.node('tgt-file')!.hooks.beforeWrite.tapPromise('test', async (request) => {
    writes.push(request);
    return undefined;
  });
  const events: BlockLayerEvent[] = [];
  layer.hooks.event.tap('test', (event) => events.push(event));
  const completed = async (): Promise<BlockLayerEvent> => {
    for (let i = 0; i < 1000; i++) {
      const found = events.find((e) => e.event === 'BLOCK_JOB_COMPLETED');
      if (found !== undefined) return found;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error('no BLOCK_JOB_COMPLETED');
  };
  return { layer, original, tgt, dev, writes, completed };
}

async function contents(node: BlockNode): Promise<Buffer> {
  const buf = Buffer.alloc(node.length);
  await node.read(0, buf);
  return buf;
}

const copiedBytes = (writes: WriteRequest[]) => writes.filter((w) => w.kind === 'write' && w.buffer === undefined).reduce((sum, w) => sum + w.bytes, 0);

test('file to file: the clusters are copied by offloading, copy-before-write too', async (t) => {
  const { layer, original, tgt, dev, writes, completed } = await setUp(t, 'file');
  // speed 1: the first burst copies one chunk, then the job waits while the guest writes.
  await layer.execute('blockdev-backup', {
    'job-id': 'j', device: 'virtio0', target: 'tgt', sync: 'full', speed: 1, 'x-perf': { 'use-copy-range': true, 'max-chunk': CLUSTER },
  });
  await dev.write(10 * CLUSTER + 100, Buffer.alloc(3000, 0xaa));
  await dev.write(40 * CLUSTER, Buffer.alloc(2 * CLUSTER, 0xbb));
  await layer.execute('block-job-set-speed', { device: 'j', speed: 0 });
  t.like((await completed()).data, { device: 'j', len: SIZE, offset: SIZE });
  t.true((await contents(tgt)).equals(original), 'the target is the source at the start');
  t.is(copiedBytes(writes), SIZE, 'every byte reached the target file as an offloaded copy');
  t.is(writes.filter((w) => w.buffer !== undefined).length, 0);
});

test('without offloading on the way, the job reads and writes instead', async (t) => {
  const { layer, original, tgt, writes, completed } = await setUp(t, 'memory');
  await layer.execute('blockdev-backup', { 'job-id': 'j', device: 'virtio0', target: 'tgt', sync: 'full', 'x-perf': { 'use-copy-range': true } });
  t.like((await completed()).data, { device: 'j', len: SIZE, offset: SIZE });
  t.true((await contents(tgt)).equals(original));
  t.is(copiedBytes(writes), 0);
});
