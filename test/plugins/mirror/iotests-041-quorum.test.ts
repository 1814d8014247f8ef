/**
 * qemu-iotests 041 TestRepairQuorum: a quorum `quorum0` (vote-threshold 2)
 * over three qcow2 nodes img0..img2, and drive-mirror from quorum0 with
 * `replaces: "img1"` into a new image `repair0`, which on completion takes
 * img1's place as the quorum's children.1; its error cases with QEMU's
 * messages, including a child another user holds (an NBD export), before
 * the job starts and after. Beyond QEMU's test: data is written through
 * the quorum first, so comparing the images says something, and the
 * repaired quorum is shown to write to the new child. Not here:
 * test_medium_not_found (an empty CD-ROM drive, which blocklayer has no
 * notion of).
 */
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { BlockLayerError } from '../../../core/errors.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { tempDir } from '../../helpers/temp-dir.js';
import { assertNoActiveJobs, cancelAndWait, completeAndWait, qcow2Node, qemuImg, waitReadyAndCancel } from './iotest-images.js';
import { assertIdentical, compareImages, delay, EventLog, havePeers, MiB } from './mirror-session.js';

interface QuorumSession {
  layer: Awaited<ReturnType<typeof createTestLayer>>;
  log: EventLog;
  dir: string;
  /** quorum_img1..3 of 041: the files of img0..img2. */
  images: string[];
  repair: string;
}

async function withQuorum(t: ExecutionContext, body: (s: QuorumSession) => Promise<void>): Promise<void> {
  if (!havePeers(t)) return;
  const dir = await tempDir(t, 'blocklayer-041-quorum-');
  const layer = await createTestLayer({
    plugins: ['file', 'raw', 'qcow2', 'quorum', 'qmp-block-commands', 'job-commands', 'mirror', 'nbd-server', 'blockdev-snapshot'],
  });
  const s: QuorumSession = { layer, log: new EventLog(layer), dir, images: [1, 2, 3].map((i) => join(dir, `quorum${i}.img`)), repair: join(dir, 'quorum_repair.img') };
  try {
    for (const [i, image] of s.images.entries()) {
      qemuImg('create', '-q', '-f', 'qcow2', image, String(MiB));
      await layer.execute('blockdev-add', qcow2Node(`img${i}`, image));
    }
    await layer.execute('blockdev-add', { driver: 'quorum', 'node-name': 'quorum0', 'vote-threshold': 2, children: ['img0', 'img1', 'img2'] });
    const quorum = layer.graph.node('quorum0')!;
    await quorum.write(0, Buffer.alloc(256 * 1024, 0x5a));
    await quorum.write(MiB - 4096, Buffer.alloc(4096, 0xa5));
    await body(s);
  } finally {
    await layer.lifecycle.requestShutdown('test over');
    await layer.close();
  }
}

function driveMirror(s: QuorumSession, extra: Record<string, unknown> = {}): Promise<unknown> {
  return s.layer.execute('drive-mirror', {
    'job-id': 'job0',
    device: 'quorum0',
    sync: 'full',
    'node-name': 'repair0',
    replaces: 'img1',
    target: s.repair,
    format: 'qcow2',
    ...extra,
  });
}

/** assert_block_path('quorum0', '/children.1', …). */
function quorumChild(s: QuorumSession, index: number): string {
  return s.layer.graph.node('quorum0')!.children.get(`children.${index}`)!.node.nodeName;
}

/** assert_has_block_node: a node (named `name`, or any) whose file is `file`. */
async function hasBlockNode(s: QuorumSession, name: string | undefined, file: string): Promise<boolean> {
  const nodes = await s.layer.execute<{ 'node-name': string; file: string }[]>('query-named-block-nodes');
  return nodes.some((n) => (name === undefined || n['node-name'] === name) && n.file === file);
}

async function expectError(t: ExecutionContext, run: Promise<unknown>, message: string): Promise<void> {
  const error = await t.throwsAsync<BlockLayerError>(run);
  t.is(error?.errorClass, 'GenericError');
  t.is(error?.message, message);
}

async function nbdServerStart(s: QuorumSession): Promise<void> {
  await s.layer.execute('nbd-server-start', { addr: { type: 'unix', data: { path: join(s.dir, 'nbd.sock') } } });
}

test('041 TestRepairQuorum.test_complete: repair0 becomes the quorum\'s children.1', (t) =>
  withQuorum(t, async (s) => {
    await assertNoActiveJobs(t, s.layer);
    await driveMirror(s);
    await completeAndWait(s.layer, s.log, 'job0');
    t.true(await hasBlockNode(s, 'repair0', s.repair));
    t.is(quorumChild(s, 1), 'repair0');
    t.deepEqual([quorumChild(s, 0), quorumChild(s, 2)], ['img0', 'img2']);
    await s.layer.close();
    assertIdentical(t, s.images[1]!, s.repair, 'qcow2', 'qcow2');
  }));

test('041 TestRepairQuorum, beyond QEMU: a corrupted replica is repaired, and the quorum writes to the new child', (t) =>
  withQuorum(t, async (s) => {
    await s.layer.graph.node('img1')!.write(4096, Buffer.alloc(512, 0x66));
    await driveMirror(s);
    await completeAndWait(s.layer, s.log, 'job0');
    t.true(s.log.events.some((e) => e.event === 'QUORUM_REPORT_BAD' && e.data?.['node-name'] === 'img1'), 'img1 was outvoted');
    await s.layer.graph.node('quorum0')!.write(512 * 1024, Buffer.alloc(65536, 0x77));
    t.is(s.layer.graph.node('img1')!.parents.size, 0, 'img1 is out of the quorum');
    await s.layer.close();
    assertIdentical(t, s.images[0]!, s.repair, 'qcow2', 'qcow2');
    assertIdentical(t, s.images[2]!, s.repair, 'qcow2', 'qcow2');
    t.not(compareImages(s.images[1]!, s.repair, 'qcow2', 'qcow2'), 'Images are identical.');
  }));

test('041 TestRepairQuorum.test_cancel: the quorum keeps its children', (t) =>
  withQuorum(t, async (s) => {
    await assertNoActiveJobs(t, s.layer);
    await driveMirror(s);
    await cancelAndWait(s.layer, s.log, 'job0', true);
    t.true(await hasBlockNode(s, undefined, s.images[2]!));
    t.is(quorumChild(s, 1), 'img1');
  }));

test('041 TestRepairQuorum.test_cancel_after_ready', (t) =>
  withQuorum(t, async (s) => {
    await assertNoActiveJobs(t, s.layer);
    await driveMirror(s);
    await waitReadyAndCancel(t, s.layer, s.log, 'job0');
    t.true(await hasBlockNode(s, undefined, s.images[2]!));
    t.is(quorumChild(s, 1), 'img1');
    await s.layer.close();
    assertIdentical(t, s.images[1]!, s.repair, 'qcow2', 'qcow2');
  }));

test('041 TestRepairQuorum.test_pause', (t) =>
  withQuorum(t, async (s) => {
    await assertNoActiveJobs(t, s.layer);
    await driveMirror(s);
    await s.layer.execute('block-job-pause', { device: 'job0' });
    const jobs = (): Promise<Record<string, unknown>[]> => s.layer.execute('query-block-jobs');
    const offset = (await jobs())[0]!.offset;
    await delay(200);
    t.is((await jobs())[0]!.offset, offset, 'offset frozen while paused');
    await s.layer.execute('block-job-resume', { device: 'job0' });
    await completeAndWait(s.layer, s.log, 'job0');
    await s.layer.close();
    assertIdentical(t, s.images[1]!, s.repair, 'qcow2', 'qcow2');
  }));

test('041 TestRepairQuorum.test_image_not_found, test_device_not_found, test_wrong_sync_mode', (t) =>
  withQuorum(t, async (s) => {
    const error = await t.throwsAsync<BlockLayerError>(driveMirror(s, { mode: 'existing' }));
    t.is(error?.errorClass, 'GenericError');
    await expectError(t, driveMirror(s, { device: 'nonexistent' }), "Cannot find device='nonexistent' nor node-name='nonexistent'");
    await expectError(t, driveMirror(s, { sync: undefined }), "Parameter 'sync' is missing");
    await assertNoActiveJobs(t, s.layer);
  }));

test('041 TestRepairQuorum.test_no_node_name, test_nonexistent_replaces', (t) =>
  withQuorum(t, async (s) => {
    await expectError(t, driveMirror(s, { 'node-name': undefined }), 'a node-name must be provided when replacing a named node of the graph');
    await expectError(t, driveMirror(s, { replaces: 'img77' }), "Failed to find node with node-name='img77'");
    await assertNoActiveJobs(t, s.layer);
    t.false(await hasBlockNode(s, 'repair0', s.repair), 'no target left open');
  }));

test('041 TestRepairQuorum.test_with_other_parent: an exported child cannot be replaced', (t) =>
  withQuorum(t, async (s) => {
    await nbdServerStart(s);
    await s.layer.execute('nbd-server-add', { device: 'img1' });
    await expectError(
      t,
      driveMirror(s, { 'job-id': 'mirror' }),
      "Cannot replace 'img1' by a node mirrored from 'quorum0', because it cannot be guaranteed that doing so would not lead to an abrupt change of visible data",
    );
    await assertNoActiveJobs(t, s.layer);
  }));

test('041 TestRepairQuorum.test_with_other_parents_after_mirror_start: the job fails with EPERM, img1 stays', (t) =>
  withQuorum(t, async (s) => {
    await nbdServerStart(s);
    await driveMirror(s, { 'job-id': 'mirror' });
    await s.layer.execute('nbd-server-add', { device: 'img1' });
    const completed = await completeAndWait(s.layer, s.log, 'mirror');
    t.is(completed.error, 'Operation not permitted');
    t.is(quorumChild(s, 1), 'img1');
  }));

test('replaces naming a node below a quorum child is refused: only the children themselves may go', (t) =>
  withQuorum(t, async (s) => {
    const file = s.layer.graph.node('img1')!.children.get('file')!.node.nodeName;
    await expectError(
      t,
      driveMirror(s, { replaces: file }),
      `Cannot replace '${file}' by a node mirrored from 'quorum0', because it cannot be guaranteed that doing so would not lead to an abrupt change of visible data`,
    );
    await assertNoActiveJobs(t, s.layer);
  }));

test('041 TestRepairQuorum.test_after_a_quorum_snapshot: the snapshot, not the image under it, is what may be replaced', (t) =>
  withQuorum(t, async (s) => {
    const snapshot = join(s.dir, 'quorum_snapshot.img');
    await s.layer.execute('blockdev-snapshot-sync', { 'node-name': 'img1', 'snapshot-file': snapshot, 'snapshot-node-name': 'snap1' });
    t.is(quorumChild(s, 1), 'snap1');
    await expectError(
      t,
      driveMirror(s),
      "Cannot replace 'img1' by a node mirrored from 'quorum0', because it cannot be guaranteed that doing so would not lead to an abrupt change of visible data",
    );
    await driveMirror(s, { replaces: 'snap1' });
    await completeAndWait(s.layer, s.log, 'job0');
    t.true(await hasBlockNode(s, 'repair0', s.repair));
    t.is(quorumChild(s, 1), 'repair0');
    await s.layer.close();
    assertIdentical(t, s.images[0]!, s.repair, 'qcow2', 'qcow2');
  }));
