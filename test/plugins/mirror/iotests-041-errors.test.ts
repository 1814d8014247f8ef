/**
 * qemu-iotests 041's TestReadErrors and TestWriteErrors: an I/O error
 * under the source's backing file (read) or under the target (write),
 * with on-source-error / on-target-error report, ignore and stop. QEMU
 * injects the error with blkdebug; here the x-inject-error filter fails
 * the first read of the source's backing node, or the first data write to
 * the target. 041 writes to the target through drive-mirror and a
 * blkdebug: filename; blocklayer has no filename prefixes, so the write
 * tests use blockdev-mirror to the filter node.
 */
import test, { type ExecutionContext } from 'ava';
import type { JobManager } from '../../../core/job/job-manager.js';
import { TOKENS } from '../../../core/tokens.js';
import { assertNoActiveJobs, completeAndWait, createImage, qcow2Over, qemuIo } from './iotest-images.js';
import { assertIdentical, type MirrorSession, MiB, openSession } from './mirror-session.js';
import { withPeerSession } from '../../helpers/peers.js';

/** 041's MIRROR_GRANULARITY, where its blkdebug rule injects the error. */
const MIRROR_GRANULARITY = MiB;
const LENGTH = 2 * MiB;

/** drive0: qcow2 test.img over the failing-once backing file (TestReadErrors.setUp). */
async function readErrors(): Promise<MirrorSession> {
  const s = await openSession();
  createImage(s.image('backing', 'img'), LENGTH);
  qcow2Over(s.image('test', 'img'), s.image('backing', 'img'));
  // Something for the tests that use sync=top.
  qemuIo(s.image('test', 'img'), 'qcow2', `write ${MIRROR_GRANULARITY + 65536} 512`);
  await s.layer.execute('blockdev-add', {
    driver: 'qcow2',
    'node-name': 'top',
    file: { driver: 'file', filename: s.image('test', 'img') },
    backing: { driver: 'x-inject-error', image: { driver: 'raw', file: { driver: 'file', filename: s.image('backing', 'img') } }, event: 'read', errno: 'EIO' },
  });
  s.layer.graph.attachBackend('drive0', 'top');
  return s;
}

/** drive0 over test.img; target: the failing-once filter over target.img (TestWriteErrors.setUp). */
async function writeErrors(): Promise<MirrorSession> {
  const s = await openSession();
  createImage(s.image('backing', 'img'), LENGTH);
  qcow2Over(s.image('test', 'img'), s.image('backing', 'img'));
  await s.layer.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: { driver: 'file', filename: s.image('test', 'img') } });
  s.layer.graph.attachBackend('drive0', 'top');
  await s.add({ kind: 'inject', name: 'target', size: LENGTH, event: 'write', errno: 'EIO' });
  return s;
}

/** The first event about drive0 that is not a status change. */
async function firstJobEvent(s: MirrorSession): Promise<{ event: string; data: Record<string, unknown> }> {
  const e = await s.log.waitFor((e) => e.event !== 'JOB_STATUS_CHANGE' && e.data?.device === 'drive0', 'a BLOCK_JOB event');
  return { event: e.event, data: e.data! };
}

async function reportCase(t: ExecutionContext, s: MirrorSession, operation: 'read' | 'write', start: () => Promise<unknown>): Promise<void> {
  await assertNoActiveJobs(t, s.layer);
  await start();
  const completed = await s.log.wait('BLOCK_JOB_COMPLETED', 'drive0');
  const error = s.log.events.find((e) => e.event === 'BLOCK_JOB_ERROR');
  t.like(error?.data, { device: 'drive0', operation, action: 'report' });
  t.false(s.log.of('drive0').includes('BLOCK_JOB_READY'), 'job completed unexpectedly (no READY)');
  t.like(completed.data, { type: 'mirror', device: 'drive0', error: 'Input/output error' });
  t.deepEqual(s.log.of('drive0').slice(-5), ['BLOCK_JOB_ERROR', 'aborting', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
  await assertNoActiveJobs(t, s.layer);
  t.is(s.layer.graph.backend('drive0')!.node.nodeName, 'top', 'no pivot');
}

async function ignoreCase(t: ExecutionContext, s: MirrorSession, operation: 'read' | 'write', start: () => Promise<unknown>): Promise<void> {
  await assertNoActiveJobs(t, s.layer);
  await start();
  const event = await firstJobEvent(s);
  t.is(event.event, 'BLOCK_JOB_ERROR');
  t.like(event.data, { device: 'drive0', operation, action: 'ignore' });
  const [job] = await s.layer.execute<Record<string, unknown>[]>('query-block-jobs');
  t.is(job?.paused, false);
  t.true(['running', 'ready'].includes(String(job?.status)));
  await completeAndWait(s.layer, s.log, 'drive0');
  await assertNoActiveJobs(t, s.layer);
}

async function stopCase(
  t: ExecutionContext,
  s: MirrorSession,
  operation: 'read' | 'write',
  start: () => Promise<unknown>,
  compare: () => void,
): Promise<void> {
  await assertNoActiveJobs(t, s.layer);
  // 041 queries as it sees BLOCK_JOB_ERROR; the checks run when the event is sent, before the job goes on.
  const seen: unknown[] = [];
  s.layer.hooks.event.tap('041-stop', (e) => {
    if (e.event !== 'BLOCK_JOB_ERROR') return;
    const job = s.layer.container.get<JobManager>(TOKENS.JobManager).find('drive0');
    seen.push({ data: e.data, paused: job?.paused, ioStatus: job?.ioStatus });
  });
  await start();
  await s.log.wait('BLOCK_JOB_ERROR', 'drive0');
  t.deepEqual(seen, [{ data: { device: 'drive0', operation, action: 'stop' }, paused: true, ioStatus: 'failed' }]);
  await s.log.status('drive0', 'paused');
  const [paused] = await s.layer.execute<Record<string, unknown>[]>('query-block-jobs');
  t.like(paused, { paused: true, 'io-status': 'failed', status: 'paused' });
  await s.layer.execute('block-job-resume', { device: 'drive0' });
  const [resumed] = await s.layer.execute<Record<string, unknown>[]>('query-block-jobs');
  t.like(resumed, { paused: false, 'io-status': 'ok' });
  await s.log.wait('BLOCK_JOB_READY', 'drive0');
  const [ready] = await s.layer.execute<Record<string, unknown>[]>('query-block-jobs');
  t.like(ready, { paused: false, 'io-status': 'ok' });
  await completeAndWait(s.layer, s.log, 'drive0', false);
  await assertNoActiveJobs(t, s.layer);
  compare();
}

const withSession = (t: ExecutionContext, make: () => Promise<MirrorSession>, body: (s: MirrorSession) => Promise<void>): Promise<void> =>
  withPeerSession(t, make, body);

const driveMirror = (s: MirrorSession, args: Record<string, unknown> = {}) => () =>
  s.layer.execute('drive-mirror', { device: 'drive0', sync: 'full', target: s.image('target', 'img'), ...args });
const blockdevMirror = (s: MirrorSession, args: Record<string, unknown> = {}) => () =>
  s.layer.execute('blockdev-mirror', { device: 'drive0', sync: 'full', target: 'target', ...args });

test.serial('041 TestReadErrors.test_report_read', (t) => withSession(t, readErrors, (s) => reportCase(t, s, 'read', driveMirror(s))));

test.serial('041 TestReadErrors.test_ignore_read', (t) =>
  withSession(t, readErrors, async (s) => {
    await ignoreCase(t, s, 'read', driveMirror(s, { 'on-source-error': 'ignore' }));
    assertIdentical(t, s.image('test', 'img'), s.image('target', 'img'), 'qcow2', 'qcow2');
  }));

test.serial('041 TestReadErrors.test_stop_read', (t) =>
  withSession(t, readErrors, async (s) => {
    await stopCase(t, s, 'read', driveMirror(s, { 'on-source-error': 'stop' }), () =>
      assertIdentical(t, s.image('test', 'img'), s.image('target', 'img'), 'qcow2', 'qcow2'),
    );
  }));

// The target opens without its backing file until the end, so the top layer's 64 KiB at 1 MiB + 64 KiB is
// copied as the whole 128 KiB target cluster: its first half comes from the source's failing backing file.
test.serial('041 TestReadErrors.test_large_cluster (sync=top into an existing image with 128 KiB clusters)', (t) =>
  withSession(t, readErrors, async (s) => {
    await assertNoActiveJobs(t, s.layer);
    qcow2Over(s.image('target', 'img'), s.image('backing', 'img'), ['cluster_size=131072']);
    await driveMirror(s, { sync: 'top', mode: 'existing', 'on-source-error': 'ignore' })();
    const event = await firstJobEvent(s);
    t.is(event.event, 'BLOCK_JOB_ERROR');
    t.like(event.data, { device: 'drive0', operation: 'read', action: 'ignore' });
    const [job] = await s.layer.execute<Record<string, unknown>[]>('query-block-jobs');
    t.is(job?.paused, false);
    await completeAndWait(s.layer, s.log, 'drive0');
    await assertNoActiveJobs(t, s.layer);
    assertIdentical(t, s.image('test', 'img'), s.image('target', 'img'), 'qcow2', 'qcow2');
  }));

test.serial('041 TestWriteErrors.test_report_write', (t) => withSession(t, writeErrors, (s) => reportCase(t, s, 'write', blockdevMirror(s))));

test.serial('041 TestWriteErrors.test_ignore_write', (t) =>
  withSession(t, writeErrors, async (s) => {
    await ignoreCase(t, s, 'write', blockdevMirror(s, { 'on-target-error': 'ignore' }));
    assertIdentical(t, s.image('test', 'img'), s.image('target'), 'qcow2', 'raw');
  }));

test.serial('041 TestWriteErrors.test_stop_write', (t) =>
  withSession(t, writeErrors, async (s) => {
    await stopCase(t, s, 'write', blockdevMirror(s, { 'on-target-error': 'stop' }), () =>
      assertIdentical(t, s.image('test', 'img'), s.image('target'), 'qcow2', 'raw'),
    );
  }));
