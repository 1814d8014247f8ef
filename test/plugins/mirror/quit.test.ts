/**
 * qemu-iotests 185: `quit` while a mirror runs at 64 KiB/s cancels it
 * (BLOCK_JOB_CANCELLED) with the offset reached after exactly one
 * rate-limited iteration (the whole 4 MiB: an iteration takes up to
 * buf-size, and the rate limit only delays the next one), and the images
 * stay consistent.
 */
import test from 'ava';
import { waitForProgress } from '../../helpers/job-transcripts.js';
import { havePeers, MiB, openSession } from './mirror-session.js';

test('185: quit cancels a running mirror after one rate-limited iteration', async (t) => {
  if (!havePeers(t)) return;
  const s = await openSession([
    { kind: 'raw', name: 'disk', size: 4 * MiB, data: ['write -P 0x11 0 4M'] },
    { kind: 'raw', name: 'target', size: 4 * MiB },
  ]);
  try {
    await s.layer.execute('blockdev-mirror', { 'job-id': 'disk', device: 'disk', target: 'target', sync: 'full', speed: 65536 });
    await waitForProgress(await s.client(), 'disk', 4 * MiB);
    await s.layer.lifecycle.requestShutdown('host-qmp-quit');
    const cancelled = await s.log.wait('BLOCK_JOB_CANCELLED', 'disk');
    t.deepEqual(cancelled.data, { type: 'mirror', device: 'disk', len: 4 * MiB, offset: 4 * MiB, speed: 65536 });
    await s.log.status('disk', 'null');
    t.deepEqual(s.log.of('disk').slice(-4), ['aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null']);
    t.is(s.layer.graph.node('disk')!.parents.size, 0, 'the filter is gone');
  } finally {
    await s.close();
  }
});
