/**
 * qemu-iotests 151, active mirroring (copy-mode=write-blocking): guest
 * writes while the job starts, runs and is ready, unaligned and
 * intersecting writes while the background copy is held back by speed=1;
 * once READY, every guest write is on the target when it completes (the
 * dirty bitmap stays clean until the job completes). 151 writes with
 * qemu-io through the VM; here the writes go through the device.
 */
import test, { type ExecutionContext } from 'ava';
import type { BlockBackend } from '../../../core/block/block-backend.js';
import { completeAndWait } from './iotest-images.js';
import { assertIdentical, havePeers, type MirrorSession, MiB, openSession } from './mirror-session.js';

/** 151 uses 128 MiB; the ranges below are eighths of the image as there. */
const IMAGE_LEN = 32 * MiB;

async function withSource(t: ExecutionContext, fill: string, body: (s: MirrorSession, device: BlockBackend) => Promise<void>): Promise<void> {
  if (!havePeers(t)) return;
  const s = await openSession([
    { kind: 'raw', name: 'source-node', size: IMAGE_LEN, data: [fill] },
    { kind: 'raw', name: 'target-node', size: IMAGE_LEN },
  ]);
  try {
    await body(s, s.layer.graph.attachBackend('source', 'source-node'));
  } finally {
    await s.close();
  }
}

/** qemu-io's aio_write -P / -z over `[from, to)` in 1 MiB requests, not waited for. */
function aioWrites(device: BlockBackend, from: number, to: number, pattern: number | 'zero'): Promise<void>[] {
  const requests: Promise<void>[] = [];
  for (let offset = from; offset < to; offset += MiB) {
    requests.push(pattern === 'zero' ? device.writeZeroes(offset, MiB) : device.write(offset, Buffer.alloc(MiB, pattern)));
  }
  return requests;
}

async function jobInfo(s: MirrorSession): Promise<Record<string, unknown>> {
  return (await s.layer.execute<Record<string, unknown>[]>('query-block-jobs'))[0]!;
}

function doActiveIO(flushed: boolean) {
  return (t: ExecutionContext) =>
    withSource(t, `write -P 1 0 ${IMAGE_LEN}`, async (s, device) => {
      const eighth = IMAGE_LEN / 8;
      // Some background requests, then the job, then more requests.
      const early = [...aioWrites(device, eighth, 3 * eighth, 2), ...aioWrites(device, 2 * eighth, 3 * eighth, 'zero')];
      await s.layer.execute('blockdev-mirror', {
        'job-id': 'mirror',
        'filter-node-name': 'mirror-node',
        device: 'source-node',
        target: 'target-node',
        sync: 'full',
        'copy-mode': 'write-blocking',
      });
      const during = [...aioWrites(device, 3 * eighth, 5 * eighth, 3), ...aioWrites(device, 4 * eighth, 5 * eighth, 'zero')];
      await s.log.wait('BLOCK_JOB_READY', 'mirror');
      await Promise.all([...early, ...during]);
      // Now the final requests; all of them are settled by the active mechanism: nothing goes dirty.
      const final = [...aioWrites(device, 5 * eighth, 7 * eighth, 3), ...aioWrites(device, 6 * eighth, 7 * eighth, 'zero')];
      if (flushed) {
        await Promise.all(final);
        await device.flush();
        const info = await jobInfo(s);
        t.is(info.offset, info.len, 'once the writes are done, the target has them all: nothing left to copy');
        t.is(info.status, 'ready');
      }
      await completeAndWait(s.layer, s.log, 'mirror', false);
      await Promise.all(final);
      t.is(device.node.nodeName, 'target-node');
      // Without the flush, writes could still be on their way at the pivot: as 151, compare only flushed runs.
      if (flushed) assertIdentical(t, s.image('source-node'), s.image('target-node'));
    });
}

test.serial('151 TestActiveMirror.testActiveIO', doActiveIO(false));
test.serial('151 TestActiveMirror.testActiveIOFlushed', doActiveIO(true));

test.serial('151 TestActiveMirror.testUnalignedActiveIO', (t) =>
  withSource(t, 'write -P 1 0 2M', async (s, device) => {
    // The job starts very slowly, so the area stays dirty.
    await s.layer.execute('blockdev-mirror', {
      'job-id': 'mirror',
      device: 'source-node',
      target: 'target-node',
      sync: 'full',
      'copy-mode': 'write-blocking',
      'buf-size': MiB / 4,
      speed: 1,
    });
    // An unaligned request to a dirty area.
    await device.write(MiB + 42, Buffer.from([2]));
    await s.layer.execute('block-job-set-speed', { device: 'mirror', speed: 0 });
    await completeAndWait(s.layer, s.log, 'mirror');
    assertIdentical(t, s.image('source-node'), s.image('target-node'));
  }));

test.serial('151 TestActiveMirror.testIntersectingActiveIO', (t) =>
  withSource(t, 'write -P 1 0 2M', async (s, device) => {
    await s.layer.execute('blockdev-mirror', {
      'job-id': 'mirror',
      device: 'source-node',
      target: 'target-node',
      sync: 'full',
      'copy-mode': 'write-blocking',
      speed: 1,
    });
    // Three intersecting writes in flight at once (qemu-io's default pattern 0xcd, then 2 MiB twice).
    await Promise.all([device.write(0, Buffer.alloc(MiB, 0xcd)), device.write(0, Buffer.alloc(2 * MiB, 0xce)), device.write(0, Buffer.alloc(2 * MiB, 0xcf))]);
    await s.layer.execute('block-job-set-speed', { device: 'mirror', speed: 0 });
    await completeAndWait(s.layer, s.log, 'mirror');
    assertIdentical(t, s.image('source-node'), s.image('target-node'));
  }));

test.serial('write-blocking: after READY each guest write is on the target when it completes (the target never lags)', (t) =>
  withSource(t, 'write -P 1 0 4M', async (s, device) => {
    await s.layer.execute('blockdev-mirror', { 'job-id': 'mirror', device: 'source-node', target: 'target-node', sync: 'full', 'copy-mode': 'write-blocking' });
    await s.log.wait('BLOCK_JOB_READY', 'mirror');
    const target = s.layer.graph.node('target-node')!;
    for (const [offset, bytes] of [[5 * MiB + 3, 70_000], [0, 4096], [IMAGE_LEN - 1000, 1000], [12 * MiB, 2 * MiB]] as const) {
      const data = Buffer.alloc(bytes, (offset & 0x7f) + 1);
      await device.write(offset, data);
      const copy = Buffer.alloc(bytes);
      await target.read(offset, copy);
      t.true(copy.equals(data), `the write at ${offset} is on the target`);
      const info = await jobInfo(s);
      t.is(info.offset, info.len);
    }
    await completeAndWait(s.layer, s.log, 'mirror', false);
    assertIdentical(t, s.image('source-node'), s.image('target-node'));
  }));

test.serial('write-blocking: a failed target write leaves the range dirty and goes to on-target-error; the guest write succeeds', (t) =>
  withSource(t, 'write -P 1 0 1M', async (s, device) => {
    await s.add({ kind: 'inject', name: 'bad', size: IMAGE_LEN, event: 'write', errno: 'EIO' });
    await s.layer.execute('blockdev-mirror', {
      'job-id': 'mirror',
      device: 'source-node',
      target: 'bad',
      sync: 'none',
      'copy-mode': 'write-blocking',
      'on-target-error': 'ignore',
    });
    await s.log.wait('BLOCK_JOB_READY', 'mirror');
    // The first data write to the target fails: this one, written through.
    await device.write(3 * MiB, Buffer.alloc(64 * 1024, 9));
    const error = await s.log.wait('BLOCK_JOB_ERROR', 'mirror');
    t.deepEqual(error.data, { device: 'mirror', operation: 'write', action: 'ignore' });
    // The background copy took the range again (sync=none: only what the guest wrote is copied).
    await completeAndWait(s.layer, s.log, 'mirror', false);
    const copy = Buffer.alloc(64 * 1024);
    await s.layer.graph.node('bad')!.read(3 * MiB, copy);
    t.true(copy.equals(Buffer.alloc(64 * 1024, 9)));
    t.is(device.node.nodeName, 'bad');
  }));
