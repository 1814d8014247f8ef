/**
 * qemu-iotests 030 (block-stream), re-tested here where the recordings
 * (transcripts.test.ts) do not already show it: the allocation maps after
 * a full and a partial stream, a no-op stream, pause, parallel streams on
 * disjoint segments of one chain and the overlapping stream/commit
 * requests refused (TestParallelOps, with 030's messages), a backing file
 * smaller than the image (TestSmallerBackingFile), set-speed
 * (TestSetSpeed), the job named after the device, and guest writes during
 * a stream, which the stream must never overwrite with older data.
 * Images are made with qemu-img/qemu-io and checked with qemu-img.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { BlockLayerError } from '../../../core/errors.js';
import {
  type ChainSession,
  checkImage,
  compareImages,
  flatten,
  MiB,
  openChainSession,
  qemuImgInfo,
} from '../../helpers/chain-session.js';
import { withPeerSession } from '../../helpers/peers.js';

const withSession = (t: ExecutionContext, body: (s: ChainSession) => Promise<void>): Promise<void> =>
  withPeerSession(t, () => openChainSession(), body);

/** The byte ranges `qemu-img map` reports present (allocated in the image or, with its chain, anywhere in it), merged. */
function allocated(path: string, chain: boolean): [number, number][] {
  const args = ['map', '-U', '--output=json', '-f', 'qcow2'];
  const entries = JSON.parse(execFileSync('qemu-img', [...args, chain ? path : `json:${JSON.stringify({ driver: 'qcow2', backing: null, file: { driver: 'file', filename: path } })}`], { encoding: 'utf8' })) as {
    start: number;
    length: number;
    present: boolean;
  }[];
  const ranges: [number, number][] = [];
  for (const e of entries.filter((x) => x.present)) {
    const last = ranges[ranges.length - 1];
    if (last !== undefined && last[1] === e.start) last[1] += e.length;
    else ranges.push([e.start, e.start + e.length]);
  }
  return ranges;
}

async function refused(t: ExecutionContext, s: ChainSession, command: string, args: Record<string, unknown>, message: string): Promise<void> {
  const error = await t.throwsAsync<BlockLayerError>(s.layer.execute(command, args), undefined, `${command} ${JSON.stringify(args)}`);
  t.is(error?.message, message, `${command} ${JSON.stringify(args)}`);
}

async function queryJob(s: ChainSession, id: string): Promise<Record<string, unknown>> {
  const jobs = (await s.layer.execute('query-block-jobs', {})) as Record<string, unknown>[];
  return jobs.find((j) => j.device === id)!;
}

test('TestSingleDrive: a full stream leaves the image allocated where the chain was, with no backing file', (t) =>
  withSession(t, async (s) => {
    await s.chain('');
    const before = allocated(s.path('top'), true);
    const expected = flatten(s.path('top'), join(s.dir, 'expected.raw'));
    await s.layer.execute('block-stream', { 'job-id': 'st', device: 'top' });
    await s.log.status('st', 'null');
    t.deepEqual(s.log.of('st'), ['created', 'running', 'waiting', 'pending', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
    t.deepEqual(allocated(s.path('top'), false), before, 'image file map matches the chain');
    t.false('backing-filename' in qemuImgInfo(s.path('top')));
    t.is(compareImages(s.path('top'), expected, 'qcow2', 'raw'), 'Images are identical.');
    t.is(checkImage(s.path('top')), '');
  }));

test('TestSingleDrive: a partial stream (base) leaves the image allocated where it and the intermediate image were', (t) =>
  withSession(t, async (s) => {
    s.chainImages('');
    const mid = allocated(s.path('mid'), false);
    const top = allocated(s.path('top'), false);
    await s.add('base');
    await s.add('mid', 'base');
    await s.add('top', 'mid');
    await s.layer.execute('block-stream', { 'job-id': 'st', device: 'top', base: s.path('base') });
    await s.log.status('st', 'null');
    const union = [...mid, ...top].sort((a, b) => a[0] - b[0]).reduce<[number, number][]>((out, r) => {
      const last = out[out.length - 1];
      if (last !== undefined && last[1] >= r[0]) last[1] = Math.max(last[1], r[1]);
      else out.push([r[0], r[1]]);
      return out;
    }, []);
    t.deepEqual(allocated(s.path('top'), false), union);
    t.like(qemuImgInfo(s.path('top')), { 'backing-filename': s.path('base') });
  }));

test('TestSingleDrive: base = the direct backing file is a no-op: len 0, map unchanged', (t) =>
  withSession(t, async (s) => {
    await s.chain('');
    const before = allocated(s.path('top'), false);
    await s.layer.execute('block-stream', { 'job-id': 'st', device: 'top', 'base-node': 'mid' });
    const completed = await s.log.wait('BLOCK_JOB_COMPLETED', 'st');
    t.like(completed, { len: 0, offset: 0 });
    t.deepEqual(allocated(s.path('top'), false), before);
  }));

test('TestSingleDrive: offset stays constant while paused; resume completes', (t) =>
  withSession(t, async (s) => {
    s.image('base', '64M', undefined, ['write -P 0x11 0 32M']);
    s.image('top', '64M', 'base');
    await s.add('base');
    await s.add('top', 'base');
    await s.layer.execute('block-stream', { 'job-id': 'st', device: 'top', speed: 8 * MiB });
    await s.layer.execute('job-pause', { id: 'st' });
    await s.log.status('st', 'paused');
    const first = await queryJob(s, 'st');
    await new Promise((resolve) => setTimeout(resolve, 400));
    const second = await queryJob(s, 'st');
    t.like(first, { status: 'paused', paused: true });
    t.is(second.offset, first.offset, 'offset unchanged while paused');
    await s.layer.execute('job-resume', { id: 'st' });
    await s.layer.execute('block-job-set-speed', { device: 'st', speed: 0 });
    await s.log.status('st', 'null');
    t.false(s.log.of('st').includes('aborting'));
    t.false('backing-filename' in qemuImgInfo(s.path('top')));
  }));

test('TestSetSpeed: default 0, set and read back, negative refused at start and by set-speed', (t) =>
  withSession(t, async (s) => {
    s.image('base', '64M', undefined, ['write -P 0x11 0 32M']);
    s.image('top', '64M', 'base');
    await s.add('base');
    await s.add('top', 'base');
    await refused(t, s, 'block-stream', { 'job-id': 'st', device: 'top', speed: -1 }, "Parameter 'speed' expects a non-negative value");
    await s.layer.execute('block-stream', { 'job-id': 'st', device: 'top' });
    await s.layer.execute('job-pause', { id: 'st' });
    t.is((await queryJob(s, 'st')).speed, 0);
    await s.layer.execute('block-job-set-speed', { device: 'st', speed: 8 * MiB });
    t.is((await queryJob(s, 'st')).speed, 8 * MiB);
    await refused(t, s, 'block-job-set-speed', { device: 'st', speed: -1 }, "Parameter 'speed' expects a non-negative value");
    await s.layer.execute('block-job-cancel', { device: 'st', force: true });
    await s.log.status('st', 'null');
    await s.layer.execute('block-stream', { 'job-id': 'st2', device: 'top', speed: 4 * MiB });
    t.is((await queryJob(s, 'st2')).speed, 4 * MiB);
    await s.layer.execute('block-job-cancel', { device: 'st2' });
    await s.log.status('st2', 'null');
    t.is(checkImage(s.path('top')), '');
  }));

test('the job id defaults to the device name; without a device the id is refused', (t) =>
  withSession(t, async (s) => {
    await s.chain('');
    await refused(t, s, 'block-stream', { device: 'top' }, "Invalid job ID ''");
    s.layer.graph.attachBackend('drive0', 'top');
    await s.layer.execute('block-stream', { device: 'drive0' });
    await s.log.status('drive0', 'null');
    t.is(s.layer.graph.backend('drive0')!.node.nodeName, 'top', 'the device is back on its node');
    t.false('backing-filename' in qemuImgInfo(s.path('top')));
  }));

test('TestSmallerBackingFile: a backing file smaller than the image streams, the rest reads as zeroes', (t) =>
  withSession(t, async (s) => {
    s.image('base', '1M', undefined, ['write -P 0x11 0 1M']);
    s.image('top', '2M', 'base', ['write -P 0x22 1536k 64k']);
    await s.add('base');
    await s.add('top', 'base');
    const expected = flatten(s.path('top'), join(s.dir, 'expected.raw'));
    await s.layer.execute('block-stream', { 'job-id': 'st', device: 'top' });
    t.like(await s.log.wait('BLOCK_JOB_COMPLETED', 'st'), { len: 2 * MiB, offset: 2 * MiB });
    t.is(compareImages(s.path('top'), expected, 'qcow2', 'raw'), 'Images are identical.');
    t.is(checkImage(s.path('top')), '');
  }));

test('guest writes during a stream win over the data copied up from the chain', (t) =>
  withSession(t, async (s) => {
    s.image('base', '32M', undefined, ['write -P 0x11 0 32M']);
    s.image('top', '32M', 'base');
    await s.add('base');
    await s.add('top', 'base');
    const device = s.layer.graph.attachBackend('drive0', 'top');
    await s.layer.execute('block-stream', { device: 'drive0', speed: 16 * MiB });
    // Writes all over the image while the job copies: unaligned, across clusters, some twice.
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 64; i++) {
      const offset = ((i * 7919) % 31) * MiB + (i % 3) * 4096 + 512;
      writes.push(device.write(offset, Buffer.alloc(70_000, 0x40 + (i % 32))));
      if (i % 8 === 7) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await Promise.all(writes);
    const expectedNow = Buffer.alloc(32 * MiB, 0x11);
    for (let i = 0; i < 64; i++) {
      const offset = ((i * 7919) % 31) * MiB + (i % 3) * 4096 + 512;
      expectedNow.fill(0x40 + (i % 32), offset, offset + 70_000);
    }
    await s.layer.execute('block-job-set-speed', { device: 'drive0', speed: 0 });
    await s.log.status('drive0', 'null');
    t.false(s.log.of('drive0').includes('aborting'));
    const reread = Buffer.alloc(32 * MiB);
    await device.read(0, reread);
    t.true(reread.equals(expectedNow), 'the device reads the guest data over the streamed base');
    s.layer.graph.detachBackend('drive0');
    await s.layer.execute('blockdev-del', { 'node-name': 'top' });
    const raw = join(s.dir, 'expected.raw');
    execFileSync('dd', ['of=' + raw, 'status=none'], { input: expectedNow });
    t.is(compareImages(s.path('top'), raw, 'qcow2', 'raw'), 'Images are identical.');
    t.false('backing-filename' in qemuImgInfo(s.path('top')));
    t.is(checkImage(s.path('top')), '');
  }));

/**
 * 030's TestParallelOps chain: node0 … node8, each backed by the one before;
 * the odd ones hold data. All are written before the layer opens any, as
 * 030 writes them before it starts QEMU: qemu-io could not open a backing
 * file the layer has open read-write (image locks).
 */
async function parallelChain(s: ChainSession): Promise<void> {
  const odd = [7, 5, 3, 1];
  for (let i = 0; i < 9; i++) {
    const index = odd.indexOf(i);
    // Alternating 2 and 4 MiB, so the jobs do not finish in the order they started.
    const writes = index < 0 ? [] : [`write -P 0x${(0xa0 + i).toString(16)} ${index * 4}M ${2 + 2 * (index % 2)}M`];
    s.image(`node${i}`, '16M', i === 0 ? undefined : `node${i - 1}`, writes);
  }
  for (let i = 0; i < 9; i++) await s.add(`node${i}`, i === 0 ? undefined : `node${i - 1}`);
  s.layer.graph.attachBackend('drive0', 'node8');
}

test('TestParallelOps: streams on disjoint segments of one chain run in parallel and all complete', (t) =>
  withSession(t, async (s) => {
    await parallelChain(s);
    const expected = [2, 4, 6, 8].map((i) => flatten(s.path(`node${i}`), join(s.dir, `expected${i}.raw`)));
    // As 030 in QEMU ≥ 6.0: `bottom`, since with `base` the chain would run through the copy-on-read filter of the job below.
    for (const i of [2, 4, 6, 8]) {
      await s.layer.execute('block-stream', { 'job-id': `stream-node${i}`, device: `node${i}`, bottom: `node${i - 1}`, speed: MiB });
    }
    for (const i of [2, 4, 6, 8]) await s.layer.execute('block-job-set-speed', { device: `stream-node${i}`, speed: 0 });
    for (const i of [2, 4, 6, 8]) {
      await s.log.status(`stream-node${i}`, 'null');
      t.false(s.log.of(`stream-node${i}`).includes('aborting'), `stream-node${i} completed`);
    }
    [2, 4, 6, 8].forEach((i, k) => {
      t.like(qemuImgInfo(s.path(`node${i}`)), { 'backing-filename': s.path(`node${i - 2}`) });
      t.is(compareImages(s.path(`node${i}`), expected[k]!, 'qcow2', 'raw'), 'Images are identical.', `node${i}`);
      t.is(checkImage(s.path(`node${i}`)), '');
    });
  }));

const busy = (node: string, type: string) => `Node '${node}' is busy: block device is in use by block job: ${type}`;

test('TestParallelOps overlapping 1: a stream blocks overlapping streams and commits', (t) =>
  withSession(t, async (s) => {
    await parallelChain(s);
    const img = (i: number) => s.path(`node${i}`);
    await s.layer.execute('block-stream', { device: 'node4', 'job-id': 'stream-node4', base: img(1), 'filter-node-name': 'stream-filter', speed: MiB });
    await refused(t, s, 'block-stream', { device: 'node5', 'job-id': 'stream-node5', base: img(2) }, busy('stream-filter', 'stream'));
    await refused(t, s, 'block-stream', { device: 'node3', 'job-id': 'stream-node3', base: img(2) }, busy('node3', 'stream'));
    await refused(t, s, 'block-stream', { device: 'node4', 'job-id': 'stream-node4-v2' }, busy('node4', 'stream'));
    await refused(t, s, 'block-commit', { device: 'drive0', base: img(4), 'job-id': 'commit-node4' }, busy('stream-filter', 'stream'));
    await refused(t, s, 'block-commit', { device: 'drive0', base: img(1), top: img(3), 'job-id': 'commit-node1' }, busy('node3', 'stream'));
    // It would have to rewrite the backing file name in node2, which the stream holds.
    await refused(t, s, 'block-commit', { device: 'drive0', base: img(0), top: img(1), 'job-id': 'commit-node0' }, busy('node2', 'stream'));
    await s.layer.execute('block-job-set-speed', { device: 'stream-node4', speed: 0 });
    await s.log.status('stream-node4', 'null');
    t.like(qemuImgInfo(img(4)), { 'backing-filename': img(1) });
  }));

test('TestParallelOps overlapping 2: an intermediate commit blocks overlapping streams, the active layer included', (t) =>
  withSession(t, async (s) => {
    await parallelChain(s);
    const img = (i: number) => s.path(`node${i}`);
    await s.layer.execute('block-commit', { device: 'drive0', top: img(5), base: img(3), 'job-id': 'commit-node3', speed: MiB });
    await refused(t, s, 'block-stream', { device: 'node3', 'job-id': 'stream-node3' }, busy('node3', 'commit'));
    await refused(t, s, 'block-stream', { device: 'node6', base: img(2), 'job-id': 'stream-node6' }, busy('node5', 'commit'));
    await refused(t, s, 'block-stream', { device: 'node4', base: img(2), 'job-id': 'stream-node4' }, busy('node4', 'commit'));
    await refused(t, s, 'block-stream', { device: 'node6', base: img(4), 'job-id': 'stream-node6-v2' }, busy('node5', 'commit'));
    // block-commit blocks the active layer even if it does not use it.
    await refused(t, s, 'block-stream', { device: 'drive0', base: img(5), 'job-id': 'stream-drive0' }, busy('drive0', 'commit'));
    await s.layer.execute('block-job-set-speed', { device: 'commit-node3', speed: 0 });
    await s.log.status('commit-node3', 'null');
    t.like(qemuImgInfo(img(6)), { 'backing-filename': img(3) });
  }));

test('TestParallelOps overlapping 3: an active commit blocks overlapping streams; READY and complete', (t) =>
  withSession(t, async (s) => {
    await parallelChain(s);
    const img = (i: number) => s.path(`node${i}`);
    await s.layer.execute('block-commit', { device: 'drive0', base: img(3), 'job-id': 'commit-drive0', speed: MiB });
    await refused(t, s, 'block-stream', { device: 'node5', base: img(3), 'job-id': 'stream-node6' }, busy('node5', 'commit'));
    await s.layer.execute('block-job-set-speed', { device: 'commit-drive0', speed: 0 });
    t.like(await s.log.wait('BLOCK_JOB_READY', 'commit-drive0'), { device: 'commit-drive0', type: 'commit' });
    await s.layer.execute('block-job-complete', { device: 'commit-drive0' });
    await s.log.status('commit-drive0', 'null');
    t.is(s.layer.graph.backend('drive0')!.node.nodeName, 'node3', 'the device now uses the base');
  }));

test('TestParallelOps overlapping 4: a stream whose chain runs through a commit filter cannot freeze it', (t) =>
  withSession(t, async (s) => {
    await parallelChain(s);
    const img = (i: number) => s.path(`node${i}`);
    await s.layer.execute('block-commit', { device: 'drive0', top: img(2), base: img(0), 'filter-node-name': 'commit-filter', speed: MiB });
    await refused(t, s, 'block-stream', { device: 'node4', 'base-node': 'node2', 'job-id': 'node4' }, "Cannot freeze 'backing' link to 'commit-filter'");
    await s.layer.execute('block-job-set-speed', { device: 'drive0', speed: 0 });
    await s.log.status('drive0', 'null');
    t.like(qemuImgInfo(img(3)), { 'backing-filename': img(0) });
  }));

test('TestParallelOps overlapping 5: a stream down to a commit filter; both complete, node0 backs node4', (t) =>
  withSession(t, async (s) => {
    await parallelChain(s);
    const expected = flatten(s.path('node4'), join(s.dir, 'expected4.raw'));
    await s.layer.execute('block-commit', { device: 'drive0', 'top-node': 'node2', 'base-node': 'node0', 'filter-node-name': 'commit-filter', speed: MiB });
    await s.layer.execute('block-stream', { device: 'node4', 'base-node': 'commit-filter', 'job-id': 'node4' });
    await s.layer.execute('block-job-set-speed', { device: 'drive0', speed: 0 });
    await s.log.status('drive0', 'null');
    await s.log.status('node4', 'null');
    for (const id of ['drive0', 'node4']) t.false(s.log.of(id).includes('aborting'), `${id} completed`);
    const nodes = (await s.layer.execute('query-named-block-nodes', {})) as Record<string, any>[];
    const node4 = nodes.find((n) => n['node-name'] === 'node4')!;
    t.is(node4.image['backing-image'].filename, s.path('node0'));
    t.is(compareImages(s.path('node4'), expected, 'qcow2', 'raw'), 'Images are identical.');
  }));
