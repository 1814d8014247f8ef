/**
 * qemu-iotests 041's remaining classes: TestMirrorNoBacking (existing
 * targets with their own backing files), TestMirrorResized (sync top/full
 * of a source larger than its backing file), TestSetSpeed, TestUnbackedSource
 * (drive-mirror absolute-paths × full/top/none), TestGranularity, the
 * blockdev-mirror error cases (mirror to self, resizing source or target
 * during the job, a target of another size), and `replaces` through a
 * filter (the other way a node may be replaced: reached from the source
 * through filters). 041's TestRepairQuorum, `replaces` naming a quorum
 * child, is iotests-041-quorum.test.ts.
 */
import test, { type ExecutionContext } from 'ava';
import type { BlockLayerError } from '../../../core/errors.js';
import { assertNoActiveJobs, completeAndWait, createImage, qcow2Node, qcow2Over, qemuImg, qemuIo, waitReadyAndCancel } from './iotest-images.js';
import { assertIdentical, type MirrorSession, MiB, openSession } from './mirror-session.js';
import { withPeerSession } from '../../helpers/peers.js';

const withSession = (t: ExecutionContext, body: (s: MirrorSession) => Promise<void>): Promise<void> =>
  withPeerSession(t, () => openSession(), body);

/** drive0: qcow2 test.img over a raw backing.img of `backingLength` (resized to `length`). */
async function drive0(s: MirrorSession, backingLength: number, length = backingLength): Promise<void> {
  createImage(s.image('backing', 'img'), backingLength);
  qcow2Over(s.image('test', 'img'), s.image('backing', 'img'));
  if (length !== backingLength) qemuImg('resize', '-q', s.image('test', 'img'), String(length));
  await s.layer.execute('blockdev-add', qcow2Node('top', s.image('test', 'img')));
  s.layer.graph.attachBackend('drive0', 'top');
}

function driveNode(s: MirrorSession): string {
  return s.layer.graph.backend('drive0')!.node.nodeName;
}

async function expectError(t: ExecutionContext, run: Promise<unknown>, message: string): Promise<void> {
  const error = await t.throwsAsync<BlockLayerError>(run);
  t.is(error?.errorClass, 'GenericError');
  t.is(error?.message, message);
}

const compareTarget = (t: ExecutionContext, s: MirrorSession): void =>
  assertIdentical(t, s.image('test', 'img'), s.image('target', 'img'), 'qcow2', 'qcow2');

// --- TestMirrorNoBacking: 2 MiB, drive-mirror full into an existing image ---------------------------

test.serial('041 TestMirrorNoBacking.test_complete', (t) =>
  withSession(t, async (s) => {
    await drive0(s, 2 * MiB);
    qcow2Over(s.image('target', 'img'), s.image('backing', 'img'));
    await s.layer.execute('drive-mirror', { device: 'drive0', sync: 'full', mode: 'existing', target: s.image('target', 'img') });
    await completeAndWait(s.layer, s.log, 'drive0');
    t.not(driveNode(s), 'top', 'drive0 is on the target');
    compareTarget(t, s);
  }));

test.serial('041 TestMirrorNoBacking.test_cancel', (t) =>
  withSession(t, async (s) => {
    await drive0(s, 2 * MiB);
    qcow2Over(s.image('target', 'img'), s.image('backing', 'img'));
    await s.layer.execute('drive-mirror', { device: 'drive0', sync: 'full', mode: 'existing', target: s.image('target', 'img') });
    await waitReadyAndCancel(t, s.layer, s.log, 'drive0');
    t.is(driveNode(s), 'top');
    compareTarget(t, s);
  }));

test.serial('041 TestMirrorNoBacking.test_large_cluster', (t) =>
  withSession(t, async (s) => {
    await drive0(s, 2 * MiB);
    // The target's backing file is empty: everything must come from the mirror.
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `size=${2 * MiB}`, s.image('target-backing', 'img'));
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${2 * MiB},backing_file=${s.image('target-backing', 'img')},backing_fmt=qcow2`, s.image('target', 'img'));
    await s.layer.execute('drive-mirror', { device: 'drive0', sync: 'full', mode: 'existing', target: s.image('target', 'img') });
    await completeAndWait(s.layer, s.log, 'drive0');
    t.not(driveNode(s), 'top');
    compareTarget(t, s);
  }));

// --- TestMirrorResized: a 2 MiB image over a 1 MiB backing file -------------------------------------

for (const sync of ['top', 'full'] as const) {
  test.serial(`041 TestMirrorResized.test_complete_${sync}`, (t) =>
    withSession(t, async (s) => {
      await drive0(s, MiB, 2 * MiB);
      await s.layer.execute('drive-mirror', { device: 'drive0', sync, target: s.image('target', 'img') });
      await completeAndWait(s.layer, s.log, 'drive0');
      t.not(driveNode(s), 'top');
      compareTarget(t, s);
      const info = JSON.parse(qemuImg('info', '-U', '--output=json', s.image('target', 'img'))) as Record<string, unknown>;
      t.is(info['virtual-size'], 2 * MiB);
      if (sync === 'top') t.is(info['backing-filename'], s.image('backing', 'img'), 'sync=top: the new image is backed by the source\'s backing file');
      else t.is(info['backing-filename'], undefined, 'sync=full: no backing file');
    }));
}

// --- TestSetSpeed (8 MiB here; 041 uses 80 MiB, which at 8 MiB/s takes 10 s) ------------------------

test.serial('041 TestSetSpeed.test_set_speed', (t) =>
  withSession(t, async (s) => {
    qemuImg('create', '-q', '-f', 'raw', s.image('backing', 'img'), String(8 * MiB));
    qcow2Over(s.image('test', 'img'), s.image('backing', 'img'));
    await s.layer.execute('blockdev-add', qcow2Node('top', s.image('test', 'img')));
    s.layer.graph.attachBackend('drive0', 'top');
    const target = s.image('target', 'img');
    await s.layer.execute('drive-mirror', { device: 'drive0', sync: 'full', target });
    const speedNow = async (): Promise<unknown> => (await s.layer.execute<Record<string, unknown>[]>('query-block-jobs'))[0];
    t.like(await speedNow(), { device: 'drive0', speed: 0 }, 'default speed is 0');
    await s.layer.execute('block-job-set-speed', { device: 'drive0', speed: 8 * MiB });
    t.like(await speedNow(), { device: 'drive0', speed: 8 * MiB }, 'the speed we set was accepted');
    await waitReadyAndCancel(t, s.layer, s.log, 'drive0');
    s.log.clear();
    await s.layer.execute('drive-mirror', { device: 'drive0', sync: 'full', target, speed: 4 * MiB });
    t.like(await speedNow(), { device: 'drive0', speed: 4 * MiB }, 'speed in drive-mirror works');
    await waitReadyAndCancel(t, s.layer, s.log, 'drive0');
  }));

test.serial('041 TestSetSpeed.test_set_speed_invalid', (t) =>
  withSession(t, async (s) => {
    qemuImg('create', '-q', '-f', 'raw', s.image('backing', 'img'), String(8 * MiB));
    qcow2Over(s.image('test', 'img'), s.image('backing', 'img'));
    await s.layer.execute('blockdev-add', qcow2Node('top', s.image('test', 'img')));
    s.layer.graph.attachBackend('drive0', 'top');
    const target = s.image('target', 'img');
    await expectError(t, s.layer.execute('drive-mirror', { device: 'drive0', sync: 'full', target, speed: -1 }), "Parameter 'speed' expects a non-negative value");
    t.deepEqual(s.log.of('drive0'), ['created', 'null'], 'the job existed for a moment, as in QEMU');
    await assertNoActiveJobs(t, s.layer);
    await s.layer.execute('drive-mirror', { device: 'drive0', sync: 'full', target });
    await expectError(t, s.layer.execute('block-job-set-speed', { device: 'drive0', speed: -1 }), "Parameter 'speed' expects a non-negative value");
    await waitReadyAndCancel(t, s.layer, s.log, 'drive0');
  }));

// --- TestUnbackedSource: 2 MiB qcow2 without backing file -------------------------------------------

for (const sync of ['full', 'top', 'none'] as const) {
  test.serial(`041 TestUnbackedSource.test_absolute_paths_${sync}`, (t) =>
    withSession(t, async (s) => {
      qemuImg('create', '-q', '-f', 'qcow2', s.image('test', 'img'), String(2 * MiB));
      qemuIo(s.image('test', 'img'), 'qcow2', 'write -P 0x42 64k 192k');
      await s.layer.execute('blockdev-add', qcow2Node('top', s.image('test', 'img')));
      s.layer.graph.attachBackend('drive0', 'top');
      await assertNoActiveJobs(t, s.layer);
      await s.layer.execute('drive-mirror', { device: 'drive0', sync, target: s.image('target', 'img'), mode: 'absolute-paths' });
      await completeAndWait(s.layer, s.log, 'drive0');
      await assertNoActiveJobs(t, s.layer);
      compareTarget(t, s);
      const info = JSON.parse(qemuImg('info', '-U', '--output=json', s.image('target', 'img'))) as Record<string, unknown>;
      // sync=top without a backing file is full; sync=none backs the new image with the source.
      t.is(info['backing-filename'], sync === 'none' ? s.image('test', 'img') : undefined);
    }));
}

// The target holds data of its own where the source reads as zeroes: sync=full must leave it reading as zeroes.
test.serial('041 TestUnbackedSource.test_existing_full', (t) =>
  withSession(t, async (s) => {
    qemuImg('create', '-q', '-f', 'qcow2', s.image('test', 'img'), String(2 * MiB));
    qemuIo(s.image('test', 'img'), 'qcow2', 'write -P 0x42 1M 64k');
    qemuImg('create', '-q', '-f', 'qcow2', s.image('target', 'img'), String(2 * MiB));
    qemuIo(s.image('target', 'img'), 'qcow2', 'write -P 42 0 64k', 'write -P 43 1536k 64k');
    await s.layer.execute('blockdev-add', qcow2Node('top', s.image('test', 'img')));
    s.layer.graph.attachBackend('drive0', 'top');
    await s.layer.execute('drive-mirror', { 'job-id': 'drive0', device: 'drive0', sync: 'full', target: s.image('target', 'img'), mode: 'existing' });
    await completeAndWait(s.layer, s.log, 'drive0');
    await assertNoActiveJobs(t, s.layer);
    compareTarget(t, s);
  }));

test.serial('041 TestUnbackedSource.test_blockdev_full (blockdev-mirror zero-initialises the target)', (t) =>
  withSession(t, async (s) => {
    qemuImg('create', '-q', '-f', 'qcow2', s.image('test', 'img'), String(2 * MiB));
    qemuIo(s.image('test', 'img'), 'qcow2', 'write -P 0x42 1M 64k');
    qemuImg('create', '-q', '-f', 'qcow2', s.image('target', 'img'), String(2 * MiB));
    qemuIo(s.image('target', 'img'), 'qcow2', 'write -P 42 0 64k', 'write -P 43 1536k 64k');
    await s.layer.execute('blockdev-add', qcow2Node('top', s.image('test', 'img')));
    s.layer.graph.attachBackend('drive0', 'top');
    // With discard=unmap the target zeroes itself by deallocating; without, every cluster is copied.
    for (const discard of ['unmap', 'ignore']) {
      await s.layer.execute('blockdev-add', { ...qcow2Node(`target-${discard}`, s.image('target', 'img')), discard });
      await s.layer.execute('blockdev-mirror', { 'job-id': 'drive0', device: 'drive0', sync: 'full', target: `target-${discard}` });
      await s.log.wait('BLOCK_JOB_READY', 'drive0');
      await s.layer.execute('block-job-cancel', { device: 'drive0' });
      await s.log.status('drive0', 'null');
      s.log.clear();
      await s.layer.execute('blockdev-del', { 'node-name': `target-${discard}` });
      compareTarget(t, s);
      qemuIo(s.image('target', 'img'), 'qcow2', 'write -P 44 0 64k', 'write -P 45 1536k 64k');
    }
  }));

// --- TestGranularity: 10 MiB written in full, granularity 8192 --------------------------------------

test.serial('041 TestGranularity.test_granularity', (t) =>
  withSession(t, async (s) => {
    qemuImg('create', '-q', '-f', 'qcow2', s.image('test', 'img'), String(10 * MiB));
    qemuIo(s.image('test', 'img'), 'qcow2', `write 0 ${10 * MiB}`);
    await s.layer.execute('blockdev-add', qcow2Node('top', s.image('test', 'img')));
    s.layer.graph.attachBackend('drive0', 'top');
    await s.layer.execute('drive-mirror', { device: 'drive0', sync: 'full', target: s.image('target', 'img'), mode: 'absolute-paths', granularity: 8192 });
    const first = await s.log.waitFor((e) => e.event !== 'JOB_STATUS_CHANGE' && e.data?.device === 'drive0', 'the first job event');
    // Failures would show as COMPLETED or ERROR.
    t.is(first.event, 'BLOCK_JOB_READY');
    await completeAndWait(s.layer, s.log, 'drive0', false);
    await assertNoActiveJobs(t, s.layer);
    compareTarget(t, s);
  }));

// --- blockdev-mirror errors ------------------------------------------------------------------------

test.serial('041 blockdev-mirror to itself is refused', (t) =>
  withSession(t, async (s) => {
    await s.add({ kind: 'raw', name: 'src' });
    await expectError(t, s.layer.execute('blockdev-mirror', { 'job-id': 'j', device: 'src', target: 'src', sync: 'full' }), "Can't mirror node into itself");
  }));

test.serial('041 a target of another size fails the job: Source and target image have different sizes', (t) =>
  withSession(t, async (s) => {
    await s.add({ kind: 'raw', name: 'src' });
    await s.add({ kind: 'raw', name: 'small', size: '8M' });
    await s.layer.execute('blockdev-mirror', { 'job-id': 'j', device: 'src', target: 'small', sync: 'full' });
    const completed = await s.log.wait('BLOCK_JOB_COMPLETED', 'j');
    t.deepEqual(completed.data, { type: 'mirror', device: 'j', len: 0, offset: 0, speed: 0, error: 'Source and target image have different sizes' });
    await s.log.status('j', 'null');
    t.deepEqual(s.log.of('j'), ['created', 'running', 'aborting', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
  }));

// 041's do_test_resize: block_resize of the device, of the source node and of the target node while
// the job waits for job-finalize; each is refused (a job's nodes block resizing: "Device 'x' is in use",
// with "(null)" where QEMU was given no device).
test.serial('041 resizing the source or the target during the job is refused (test_source_resize, test_target_resize)', (t) =>
  withSession(t, async (s) => {
    await s.add({ kind: 'raw', name: 'src', data: ['write -P 1 0 1M'] });
    await s.add({ kind: 'raw', name: 'tgt' });
    s.layer.graph.attachBackend('drive0', 'src');
    await s.layer.execute('blockdev-mirror', { 'job-id': 'j', device: 'drive0', target: 'tgt', sync: 'full', 'auto-finalize': false, 'auto-dismiss': false });
    await s.log.wait('BLOCK_JOB_READY', 'j');
    await s.layer.execute('job-complete', { id: 'j' });
    await s.log.wait('BLOCK_JOB_PENDING', 'j');
    await expectError(t, s.layer.execute('block_resize', { device: 'drive0', size: 65536 }), "Device 'drive0' is in use");
    for (const name of ['src', 'tgt']) {
      await expectError(t, s.layer.execute('block_resize', { 'node-name': name, size: 65536 }), "Device '(null)' is in use");
      t.is(s.layer.graph.node(name)!.length, 16 * MiB);
    }
    await s.layer.execute('job-finalize', { id: 'j' });
    await s.layer.execute('job-dismiss', { id: 'j' });
    await s.layer.execute('block_resize', { device: 'drive0', size: 32 * MiB });
    t.is(s.layer.graph.node('tgt')!.length, 32 * MiB, 'once the job is gone, the device (now on the target) may be resized');
    await s.layer.execute('block_resize', { 'node-name': 'src', size: 65536 });
    t.is(s.layer.graph.node('src')!.length, 65536, 'and so may the old source');
  }));

// --- replaces through a filter (a quorum child: iotests-041-quorum.test.ts) ---------------------------

test.serial('041 replaces: drive-mirror needs node-name; the node must be the source or reachable from it through filters', (t) =>
  withSession(t, async (s) => {
    await s.add({ kind: 'raw', name: 'img1', data: ['write -P 7 0 1M'] });
    await s.add({ kind: 'raw', name: 'other' });
    await s.add({ kind: 'raw', name: 'small', size: '8M' });
    await s.layer.execute('blockdev-add', { driver: 'x-inject-error', 'node-name': 'f', image: 'img1', event: 'read', errno: 'EIO', once: false });
    // The filter fails reads: keep the job from reading through it by writing below it.
    const target = s.image('repair');
    await expectError(
      t,
      s.layer.execute('drive-mirror', { 'job-id': 'job0', device: 'f', sync: 'full', replaces: 'img1', target, format: 'raw' }),
      'a node-name must be provided when replacing a named node of the graph',
    );
    await expectError(
      t,
      s.layer.execute('blockdev-mirror', { 'job-id': 'job0', device: 'f', sync: 'full', replaces: 'nope', target: 'other' }),
      "Failed to find node with node-name='nope'",
    );
    await expectError(
      t,
      s.layer.execute('blockdev-mirror', { 'job-id': 'job0', device: 'f', sync: 'full', replaces: 'other', target: 'other' }),
      "Cannot replace 'other' by a node mirrored from 'f', because it cannot be guaranteed that doing so would not lead to an abrupt change of visible data",
    );
    t.deepEqual(await s.layer.execute('query-block-jobs'), []);
  }));

test.serial('041 replaces: on completion the target takes the replaced node\'s place under the filter', (t) =>
  withSession(t, async (s) => {
    await s.add({ kind: 'raw', name: 'img1', data: ['write -P 7 0 1M', 'write -P 8 5M 64k'] });
    await s.add({ kind: 'raw', name: 'repair0' });
    // A filter that passes everything through here (it would fail a first data write, which the test never makes).
    await s.layer.execute('blockdev-add', { driver: 'x-inject-error', 'node-name': 'f', image: 'img1', event: 'write', errno: 'EIO' });
    s.layer.graph.attachBackend('drive0', 'f');
    await s.layer.execute('blockdev-mirror', { 'job-id': 'job0', device: 'f', sync: 'full', replaces: 'img1', target: 'repair0', 'auto-finalize': false });
    await s.log.wait('BLOCK_JOB_READY', 'job0');
    await s.layer.execute('job-complete', { id: 'job0' });
    await s.log.wait('BLOCK_JOB_PENDING', 'job0');
    // From job-complete on, the node to replace is kept from other users (QEMU's replace_blocker).
    await expectError(t, s.layer.execute('blockdev-del', { 'node-name': 'img1' }), "Node 'img1' is busy: block device is in use by block-job-complete");
    await s.layer.execute('job-finalize', { id: 'job0' });
    await s.log.status('job0', 'null');
    t.is(driveNode(s), 'f', 'the device stays on the filter');
    t.is(s.layer.graph.node('f')!.children.get('image')!.node.nodeName, 'repair0', 'the filter now filters the target');
    t.is(s.layer.graph.node('img1')!.parents.size, 0, 'the replaced node is free');
    assertIdentical(t, s.image('img1'), s.image('repair0'));
  }));

test.serial('drive-mirror node-name names the target; a target nobody uses once the job ends is closed', (t) =>
  withSession(t, async (s) => {
    await s.add({ kind: 'raw', name: 'src', data: ['write -P 5 0 1M'] });
    s.layer.graph.attachBackend('drive0', 'src');
    await s.layer.execute('drive-mirror', { device: 'drive0', sync: 'full', target: s.image('t1'), 'node-name': 't1' });
    await s.log.wait('BLOCK_JOB_READY', 'drive0');
    t.truthy(s.layer.graph.node('t1'));
    await s.layer.execute('block-job-cancel', { device: 'drive0', force: true });
    await s.log.status('drive0', 'null');
    t.is(s.layer.graph.node('t1'), undefined, 'cancelled: the target is closed');
    s.log.clear();
    await s.layer.execute('drive-mirror', { device: 'drive0', sync: 'full', target: s.image('t2'), 'node-name': 't2' });
    await completeAndWait(s.layer, s.log, 'drive0');
    t.is(driveNode(s), 't2', 'completed: the device uses the named target');
    assertIdentical(t, s.image('src'), s.image('t2'));
  }));
