/**
 * qemu-iotests 041's TestSingleDrive and TestSingleBlockdev, and their
 * zero-length and unaligned-length variants: a qcow2 device `drive0` over a
 * raw backing file, mirrored with drive-mirror (to a new image) or
 * blockdev-mirror (to a qcow2 node over the same backing file). As 041,
 * they check query-block's `inserted/file` after the job and compare the
 * images with qemu-img compare.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import type { BlockLayerError } from '../../../core/errors.js';
import {
  assertNoActiveJobs,
  cancelAndWait,
  completeAndWait,
  createImage,
  qcow2Node,
  qcow2Over,
  qemuImg,
  waitReadyAndCancel,
} from './iotest-images.js';
import { assertIdentical, delay, havePeers, type MirrorSession, MiB, openSession } from './mirror-session.js';

type Scenario = 'complete' | 'cancel' | 'cancel_after_ready' | 'pause' | 'small_buffer' | 'small_buffer2' | 'large_cluster' | 'image_not_found' | 'device_not_found';

interface Variant {
  name: string;
  command: 'drive-mirror' | 'blockdev-mirror';
  length: number;
  /** Scenarios 041 sets to None for this class. */
  without: readonly Scenario[];
}

const VARIANTS: Variant[] = [
  { name: 'TestSingleDrive', command: 'drive-mirror', length: MiB, without: [] },
  { name: 'TestSingleBlockdev', command: 'blockdev-mirror', length: MiB, without: ['large_cluster', 'image_not_found', 'small_buffer2'] },
  { name: 'TestSingleDriveZeroLength', command: 'drive-mirror', length: 0, without: ['small_buffer2', 'large_cluster'] },
  { name: 'TestSingleBlockdevZeroLength', command: 'blockdev-mirror', length: 0, without: ['large_cluster', 'image_not_found', 'small_buffer2'] },
  { name: 'TestSingleDriveUnalignedLength', command: 'drive-mirror', length: 1025 * 1024, without: ['small_buffer2', 'large_cluster'] },
  {
    name: 'TestSingleBlockdevUnalignedLength',
    command: 'blockdev-mirror',
    length: 1025 * 1024,
    without: ['large_cluster', 'image_not_found', 'small_buffer2'],
  },
];

interface Setup {
  s: MirrorSession;
  variant: Variant;
  /** test.img, target.img, backing.img */
  test: string;
  target: string;
  backing: string;
  /** The `target` argument: a file for drive-mirror, node1 for blockdev-mirror. */
  qmpTarget: string;
}

async function setUp(variant: Variant): Promise<Setup> {
  const s = await openSession();
  const backing = s.image('backing', 'img');
  const testImg = s.image('test', 'img');
  const target = s.image('target', 'img');
  createImage(backing, variant.length);
  qcow2Over(testImg, backing);
  await s.layer.execute('blockdev-add', qcow2Node('top', testImg));
  s.layer.graph.attachBackend('drive0', 'top');
  let qmpTarget = target;
  if (variant.command === 'blockdev-mirror') {
    qcow2Over(target, backing);
    await s.layer.execute('blockdev-add', qcow2Node('node1', target));
    qmpTarget = 'node1';
  }
  return { s, variant, test: testImg, target, backing, qmpTarget };
}

async function mirror(setup: Setup, args: Record<string, unknown> = {}): Promise<void> {
  const { s, variant, qmpTarget } = setup;
  await s.layer.execute(variant.command, { device: 'drive0', sync: 'full', target: qmpTarget, ...args });
}

/** 041's query-block `return[0]/inserted/file`. */
async function driveFile(setup: Setup): Promise<string> {
  const [drive] = await setup.s.layer.execute<{ device: string; inserted: { file: string } }[]>('query-block');
  if (drive?.device !== 'drive0') throw new Error('query-block: drive0 is not the first device');
  return drive.inserted.file;
}

function compareTestAndTarget(t: ExecutionContext, setup: Setup): void {
  assertIdentical(t, setup.test, setup.target, 'qcow2', 'qcow2');
}

const SCENARIOS: Record<Scenario, (t: ExecutionContext, setup: Setup) => Promise<void>> = {
  async complete(t, setup) {
    const { s } = setup;
    await assertNoActiveJobs(t, s.layer);
    await mirror(setup);
    await completeAndWait(s.layer, s.log, 'drive0');
    t.is(await driveFile(setup), setup.target);
    compareTestAndTarget(t, setup);
  },

  async cancel(t, setup) {
    const { s } = setup;
    await mirror(setup);
    const end = await cancelAndWait(s.layer, s.log, 'drive0', true);
    t.is(end.event, 'BLOCK_JOB_CANCELLED');
    t.is(await driveFile(setup), setup.test);
  },

  async cancel_after_ready(t, setup) {
    const { s } = setup;
    await mirror(setup);
    await waitReadyAndCancel(t, s.layer, s.log, 'drive0');
    t.is(await driveFile(setup), setup.test);
    compareTestAndTarget(t, setup);
  },

  async pause(t, setup) {
    const { s } = setup;
    await mirror(setup);
    await s.layer.execute('block-job-pause', { device: 'drive0' });
    await delay(100);
    const jobs = (): Promise<Record<string, unknown>[]> => s.layer.execute('query-block-jobs');
    const offset = (await jobs())[0]!.offset;
    await delay(100);
    t.is((await jobs())[0]!.offset, offset, 'offset frozen while paused');
    await s.layer.execute('block-job-resume', { device: 'drive0' });
    await completeAndWait(s.layer, s.log, 'drive0');
    compareTestAndTarget(t, setup);
  },

  async small_buffer(t, setup) {
    const { s } = setup;
    // A small buffer is rounded up automatically.
    await mirror(setup, { 'buf-size': 4096 });
    await completeAndWait(s.layer, s.log, 'drive0');
    t.is(await driveFile(setup), setup.target);
    compareTestAndTarget(t, setup);
  },

  async small_buffer2(t, setup) {
    const { s, variant } = setup;
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${variant.length},size=${variant.length}`, setup.target);
    await mirror(setup, { 'buf-size': 65536, mode: 'existing' });
    await completeAndWait(s.layer, s.log, 'drive0');
    t.is(await driveFile(setup), setup.target);
    compareTestAndTarget(t, setup);
  },

  async large_cluster(t, setup) {
    const { s, variant } = setup;
    qcow2Over(setup.target, setup.backing, [`cluster_size=${variant.length}`]);
    await mirror(setup, { mode: 'existing' });
    await completeAndWait(s.layer, s.log, 'drive0');
    t.is(await driveFile(setup), setup.target);
    compareTestAndTarget(t, setup);
  },

  async image_not_found(t, setup) {
    t.false(existsSync(setup.target));
    const error = await t.throwsAsync<BlockLayerError>(mirror(setup, { mode: 'existing' }));
    t.is(error?.errorClass, 'GenericError');
    t.is(error?.message, `Could not open '${setup.target}': No such file or directory`);
  },

  async device_not_found(t, setup) {
    const error = await t.throwsAsync<BlockLayerError>(
      setup.s.layer.execute(setup.variant.command, { device: 'nonexistent', sync: 'full', target: setup.qmpTarget }),
    );
    t.is(error?.errorClass, 'GenericError');
    t.is(error?.message, "Cannot find device='nonexistent' nor node-name='nonexistent'");
  },
};

for (const variant of VARIANTS) {
  for (const [scenario, run] of Object.entries(SCENARIOS) as [Scenario, (typeof SCENARIOS)[Scenario]][]) {
    if (variant.without.includes(scenario)) continue;
    test.serial(`041 ${variant.name}.test_${scenario}`, async (t) => {
      if (!havePeers(t)) return;
      const setup = await setUp(variant);
      try {
        await run(t, setup);
      } finally {
        await setup.s.close();
      }
    });
  }
}
