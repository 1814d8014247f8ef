/**
 * drive-mirror's target opens without its backing file until the job ends
 * (QEMU's BDRV_O_NO_BACKING), so a copy smaller than a target cluster is
 * widened to whole target clusters, the rest read from the source's
 * backing file (QEMU's mirror_cow_align); otherwise the rest of the
 * cluster would be left reading as zeroes. sync=top copies only what the
 * top layer and the guest write, in 64 KiB (or 32 KiB) chunks, into
 * 128 KiB (or 64 KiB) target clusters. Also what query-named-block-nodes
 * shows of the target during the job and after (as qemu-storage-daemon 7.2).
 */
import { execFileSync } from 'node:child_process';
import test, { type ExecutionContext } from 'ava';
import { completeAndWait, createImage, qcow2Over, qemuImg, qemuIo } from './iotest-images.js';
import { assertIdentical, KiB, type MirrorSession, MiB, openSession } from './mirror-session.js';
import { withPeerSession } from '../../helpers/peers.js';

const LENGTH = 4 * MiB;

/** drive0: qcow2 test.img (64 KiB clusters) over a raw backing file, with data in second and first halves of 128 KiB. */
async function sourceSession(): Promise<MirrorSession> {
  const s = await openSession();
  createImage(s.image('backing', 'img'), LENGTH);
  qcow2Over(s.image('test', 'img'), s.image('backing', 'img'));
  qemuIo(s.image('test', 'img'), 'qcow2', 'write -P 0x5a 64k 64k', 'write -P 0x5b 320k 4k', 'write -P 0x5c 1M 64k');
  await s.layer.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: { driver: 'file', filename: s.image('test', 'img') } });
  s.layer.graph.attachBackend('drive0', 'top');
  return s;
}

type NodeInfo = Record<string, unknown> & { image: Record<string, unknown> };

async function nodeInfo(s: MirrorSession, name: string): Promise<NodeInfo> {
  const nodes = await s.layer.execute<NodeInfo[]>('query-named-block-nodes');
  return nodes.find((n) => n['node-name'] === name)!;
}

/** Guest writes while the job is slowed down, each into one half of a target cluster; then full speed. */
async function guestWrites(s: MirrorSession): Promise<void> {
  const device = s.layer.graph.backend('drive0')!;
  await device.write(MiB + 200 * KiB, Buffer.alloc(4 * KiB, 0x61));
  await device.write(2 * MiB + 8 * KiB, Buffer.alloc(512, 0x62));
  await device.write(3 * MiB + 64 * KiB + 100, Buffer.alloc(1000, 0x63));
  await s.layer.execute('block-job-set-speed', { device: 'drive0', speed: 0 });
}

/** Source and target close (so the checks see them at rest); they must compare equal, the target check clean. */
async function assertTargetSound(t: ExecutionContext, s: MirrorSession): Promise<void> {
  s.layer.graph.detachBackend('drive0');
  await s.layer.execute('blockdev-del', { 'node-name': 'tgt' });
  await s.layer.execute('blockdev-del', { 'node-name': 'top' });
  assertIdentical(t, s.image('test', 'img'), s.image('target', 'img'), 'qcow2', 'qcow2');
  const check = execFileSync('qemu-img', ['check', '-f', 'qcow2', s.image('target', 'img')], { encoding: 'utf8' });
  t.regex(check, /No errors were found on the image/);
}

const withSession = (t: ExecutionContext, body: (s: MirrorSession) => Promise<void>): Promise<void> =>
  withPeerSession(t, () => sourceSession(), body);

test.serial('mode existing, sync=top, 64 KiB granularity into 128 KiB clusters: copies widened; the backing file opened at the end', (t) =>
  withSession(t, async (s) => {
    const backing = s.image('backing', 'img');
    qcow2Over(s.image('target', 'img'), backing, ['cluster_size=131072']);
    await s.layer.execute('drive-mirror', {
      device: 'drive0',
      target: s.image('target', 'img'),
      format: 'qcow2',
      'node-name': 'tgt',
      sync: 'top',
      mode: 'existing',
      speed: 64 * KiB,
    });
    const during = await nodeInfo(s, 'tgt');
    t.is(during.file, `json:{"backing": null, "driver": "qcow2", "file": {"driver": "file", "filename": "${s.image('target', 'img')}"}}`);
    t.false('backing_file' in during);
    t.is(during.backing_file_depth, 0);
    t.is(during.image['backing-filename'], backing);
    t.false('backing-image' in during.image);
    await guestWrites(s);
    await completeAndWait(s.layer, s.log, 'drive0');
    t.is(s.layer.graph.backend('drive0')!.node.nodeName, 'tgt');
    const after = await nodeInfo(s, 'tgt');
    t.like(after, { file: s.image('target', 'img'), backing_file: backing, backing_file_depth: 1 });
    // Every cluster the job wrote is whole: 64 KiB and 128 KiB..192 KiB from the top layer, the rest from the guest.
    const map = JSON.parse(qemuImg('map', '-U', '--output=json', '-f', 'qcow2', s.image('target', 'img'))) as { start: number; length: number; depth: number }[];
    // By guest cluster (KiB offsets): neighbours merge into one map entry only where their host clusters happen to be adjacent too.
    const own = map.filter((e) => e.depth === 0).flatMap((e) => Array.from({ length: e.length / (128 * KiB) }, (_, i) => (e.start + i * 128 * KiB) / KiB));
    t.true(map.filter((e) => e.depth === 0).every((e) => e.start % (128 * KiB) === 0 && e.length % (128 * KiB) === 0), 'whole clusters only');
    t.deepEqual(own, [0, 256, 1024, 1152, 2048, 3072]);
    await assertTargetSound(t, s);
  }));

test.serial("mode absolute-paths, sync=top, 32 KiB granularity into 64 KiB clusters: the target is backed by the source's backing node at the end", (t) =>
  withSession(t, async (s) => {
    await s.layer.execute('drive-mirror', {
      device: 'drive0',
      target: s.image('target', 'img'),
      format: 'qcow2',
      'node-name': 'tgt',
      sync: 'top',
      granularity: 32 * KiB,
      speed: 64 * KiB,
    });
    t.false(s.layer.graph.node('tgt')!.children.has('backing'), 'no backing node during the job');
    await guestWrites(s);
    await completeAndWait(s.layer, s.log, 'drive0');
    const sourceBacking = s.layer.graph.node('top')!.children.get('backing')!.node;
    t.is(s.layer.graph.node('tgt')!.children.get('backing')?.node, sourceBacking);
    await assertTargetSound(t, s);
  }));

test.serial('mode absolute-paths, sync=none: the target is backed by the source at the end', (t) =>
  withSession(t, async (s) => {
    await s.layer.execute('drive-mirror', { device: 'drive0', target: s.image('target', 'img'), format: 'qcow2', 'node-name': 'tgt', sync: 'none', granularity: 32 * KiB });
    t.is((await nodeInfo(s, 'tgt')).image['backing-filename'], s.image('test', 'img'));
    await guestWrites(s);
    await completeAndWait(s.layer, s.log, 'drive0');
    t.is(s.layer.graph.node('tgt')!.children.get('backing')?.node.nodeName, 'top');
    t.like(await nodeInfo(s, 'tgt'), { backing_file: s.image('test', 'img'), backing_file_depth: 2 });
    const device = s.layer.graph.backend('drive0')!;
    const seen = Buffer.alloc(4 * KiB);
    await device.read(MiB + 200 * KiB, seen);
    t.true(seen.every((b) => b === 0x61));
    await assertTargetSound(t, s);
  }));
