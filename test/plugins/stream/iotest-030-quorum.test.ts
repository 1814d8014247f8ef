/**
 * qemu-iotests 030 TestQuorum: a quorum (vote-threshold 2) of three qcow2
 * images, each with a backing image holding 1 KiB of 0x55, attached as a
 * device; block-stream of one child (`node0`) copies its backing data up
 * while the quorum above it stays in use, and leaves the image allocated
 * where its backing file was (qemu-io map, as 030 compares). Beyond QEMU's
 * test: the streamed image no longer has a backing file, the quorum still
 * reads the data with all three children agreeing, and the other children
 * keep theirs.
 */
import { execFileSync } from 'node:child_process';
import test, { type ExecutionContext } from 'ava';
import { type ChainSession, checkImage, havePeers, openChainSession, qemuImgInfo } from '../../helpers/chain-session.js';

const CHILDREN = 3;

async function withQuorum(t: ExecutionContext, body: (s: ChainSession) => Promise<void>): Promise<void> {
  if (!havePeers(t)) return;
  const s = await openChainSession(['quorum']);
  try {
    const children = [];
    for (let i = 0; i < CHILDREN; i++) {
      s.image(`backing-${i}`, '1M', undefined, ['write -P 0x55 0 1024']);
      s.image(`img-${i}`, '1M', `backing-${i}`);
      children.push({ driver: 'qcow2', 'node-name': `node${i}`, file: { driver: 'file', filename: s.path(`img-${i}`) } });
    }
    await s.layer.execute('blockdev-add', { driver: 'quorum', 'node-name': 'quorum0', 'vote-threshold': 2, children });
    s.layer.graph.attachBackend('drive0', 'quorum0');
    await body(s);
  } finally {
    await s.close();
  }
}

/** qemu-io's `map` of an image (its allocation in the image itself, as 030 compares them). */
function map(path: string): string {
  return execFileSync('qemu-io', ['-f', 'qcow2', '-r', '-U', '-c', 'map', path], { encoding: 'utf8' });
}

test('030 TestQuorum.test_stream_quorum: streaming node0 allocates it like its backing file', (t) =>
  withQuorum(t, async (s) => {
    t.not(map(s.path('img-0')), map(s.path('backing-0')), 'image file map matches backing file before streaming');
    t.deepEqual(await s.layer.execute('query-block-jobs'), []);
    await s.layer.execute('block-stream', { device: 'node0', 'job-id': 'stream-node0' });
    await s.log.status('stream-node0', 'null');
    t.true(s.log.of('stream-node0').includes('BLOCK_JOB_COMPLETED'));
    t.deepEqual(await s.layer.execute('query-block-jobs'), []);
    const quorum = s.layer.graph.node('quorum0')!;
    const data = Buffer.alloc(1024);
    await quorum.read(0, data);
    t.true(data.every((b) => b === 0x55), 'the quorum reads the data');
    t.false(s.log.events.some((e) => e.event.startsWith('QUORUM_')), 'the children agree');
    t.is(quorum.children.get('children.0')!.node.nodeName, 'node0');
    t.is(s.layer.graph.node('node0')!.children.get('backing'), undefined);
    await s.layer.close();
    t.is(map(s.path('img-0')), map(s.path('backing-0')), 'image file map does not match backing file after streaming');
    t.false('backing-filename' in qemuImgInfo(s.path('img-0')));
    t.is(qemuImgInfo(s.path('img-1'))['backing-filename'], s.path('backing-1'), 'the other children keep their backing files');
    t.is(checkImage(s.path('img-0')), '');
  }));
