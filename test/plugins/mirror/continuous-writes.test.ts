/**
 * Mirroring a disk the guest keeps writing (issue 6's acceptance): random
 * writes go on through the device while the job copies, reaches READY,
 * completes and pivots, and after. Afterwards the source holds exactly
 * what it held at the pivot (the writes that reached it), the target
 * compares equal to it plus every later write (qemu-img compare against
 * models of both), and writes after the pivot went to the target only.
 * Both copy modes; pause freezes progress while the guest writes.
 */
import { readFileSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import { GuestWriters, saveModel } from './guest-writers.js';
import { assertIdentical, delay, havePeers, MiB, openSession } from './mirror-session.js';

const SIZE = 32 * MiB;

async function mirrorUnderLoad(t: ExecutionContext, copyMode: 'background' | 'write-blocking', pauseMs: number): Promise<void> {
  if (!havePeers(t)) return;
  const s = await openSession([
    { kind: 'raw', name: 'src', size: SIZE, data: ['write -P 0x11 0 4M', 'write -P 0x22 8M 8M', 'write -P 0x33 30M 1M'] },
    { kind: 'raw', name: 'tgt', size: SIZE },
  ]);
  try {
    const device = s.layer.graph.attachBackend('drive0', 'src');
    const writers = new GuestWriters(device, s.layer.graph.node('src')!, readFileSync(s.image('src')), {
      writers: 4,
      maxBytes: 96 * 1024,
      pauseMs,
      seed: copyMode === 'background' ? 1 : 2,
    });
    writers.start();
    await delay(20);
    await s.layer.execute('blockdev-mirror', { device: 'drive0', target: 'tgt', sync: 'full', 'copy-mode': copyMode });
    const ready = await s.log.wait('BLOCK_JOB_READY', 'drive0', 60_000);
    const writesAtReady = writers.writes;
    t.true(writesAtReady > 0, 'the guest wrote while the job ran');
    await delay(50);
    await s.layer.execute('block-job-complete', { device: 'drive0' });
    const completed = await s.log.wait('BLOCK_JOB_COMPLETED', 'drive0', 60_000);
    const writesAtPivot = writers.writes;
    // The guest goes on writing, now to the target.
    while (writers.writes < writesAtPivot + 100) await delay(5);
    await writers.stop();
    await s.log.status('drive0', 'null');
    t.is(device.node.nodeName, 'tgt', 'the device is on the target');
    t.is(completed.data?.error, undefined);
    t.true((completed.data!.len as number) >= (ready.data!.len as number), 'len grew with the guest writes');
    t.is(completed.data!.offset, completed.data!.len);
    t.true(writers.writes > writers.writesOnSource, 'some writes came after the pivot');
    await device.flush();
    saveModel(s.image('source-at-pivot'), writers.sourceModel);
    saveModel(s.image('all-writes'), writers.model);
    assertIdentical(t, s.image('src'), s.image('source-at-pivot'));
    assertIdentical(t, s.image('tgt'), s.image('all-writes'));
    t.log(`${copyMode}: ${writers.writes} writes, ${writers.writesOnSource} on the source (${writesAtReady} before READY), len ${String(completed.data!.len)}`);
  } finally {
    await s.close();
  }
}

test.serial('background copy mode: READY under continuous random writes, pivot, later writes on the target', (t) => mirrorUnderLoad(t, 'background', 2));

test.serial('write-blocking copy mode: converges under unthrottled continuous writes (iotest 151), pivot, later writes on the target', (t) =>
  mirrorUnderLoad(t, 'write-blocking', 0));

test.serial('pause freezes the offset while the guest writes; len grows; resume and complete (041 test_pause, with copying in progress)', async (t) => {
  if (!havePeers(t)) return;
  const s = await openSession([
    { kind: 'raw', name: 'src', size: SIZE, data: ['write -P 0x11 0 32M'] },
    { kind: 'raw', name: 'tgt', size: SIZE },
  ]);
  try {
    const device = s.layer.graph.attachBackend('drive0', 'src');
    await s.layer.execute('blockdev-mirror', { device: 'drive0', target: 'tgt', sync: 'full', speed: 8 * MiB, 'buf-size': MiB });
    const jobs = async (): Promise<Record<string, number | string | boolean>> => (await s.layer.execute<Record<string, never>[]>('query-block-jobs'))[0]!;
    while ((await jobs()).offset === 0) await delay(5);
    await s.layer.execute('block-job-pause', { device: 'drive0' });
    await s.log.status('drive0', 'paused');
    const paused = await jobs();
    await device.write(30 * MiB, Buffer.alloc(64 * 1024, 0x44));
    await delay(300);
    const later = await jobs();
    t.is(later.offset, paused.offset, 'offset frozen while paused');
    t.like(later, { status: 'paused', paused: true, busy: false });
    t.true(Number(later.offset) < SIZE, 'the job was interrupted while copying');
    await s.layer.execute('block-job-set-speed', { device: 'drive0', speed: 0 });
    await s.layer.execute('block-job-resume', { device: 'drive0' });
    await s.log.wait('BLOCK_JOB_READY', 'drive0');
    await s.layer.execute('block-job-complete', { device: 'drive0' });
    await s.log.status('drive0', 'null');
    t.deepEqual(s.log.of('drive0').slice(0, 5), ['created', 'running', 'paused', 'running', 'ready']);
    assertIdentical(t, s.image('src'), s.image('tgt'));
  } finally {
    await s.close();
  }
});
