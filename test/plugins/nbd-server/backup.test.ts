/**
 * Guest writes through our NBD export during a slow backup: qemu-io writes
 * to the exported source while blockdev-backup (speed-limited) copies it.
 * The writes go through the node's I/O path — the export follows the
 * source onto backup's copy-before-write filter, as QEMU's does — so the
 * target ends up equal to the source as it was when the backup started,
 * while the source has the new data.
 */
import { copyFile } from 'node:fs/promises';
import test from 'ava';
import type { BlockLayerEvent } from '../../../core/hooks/block-layer-hooks.js';
import { requirePeer } from '../../helpers/peers.js';
import { MiB, ok, rawImage, run, serverFixture } from './fixture.js';

test('qemu-io writes over the export during a speed-limited backup do not reach the backup', async (t) => {
  if (!requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const f = await serverFixture(t, ['backup', 'job-commands', 'transaction']);
  const events: BlockLayerEvent[] = [];
  f.layer.hooks.event.tap('test', (event) => events.push(event));
  const source = f.path('src.raw');
  const target = f.path('tgt.raw');
  const before = f.path('src-at-start.raw');
  const writes = Array.from({ length: 16 }, (_, i) => `write -P ${0x10 + i} ${i}M 1M`);
  await rawImage(source, '16M', ...writes);
  await rawImage(target, '16M');
  await copyFile(source, before);
  for (const [node, file] of [['src', source], ['tgt', target]]) {
    await f.execute('blockdev-add', { driver: 'raw', 'node-name': node, file: { driver: 'file', filename: file } });
  }
  await f.execute('block-export-add', { type: 'nbd', id: 'exp0', 'node-name': 'src', writable: true });
  // 16 MiB at 4 MiB/s: about four seconds, while the guest writes.
  await f.execute('blockdev-backup', { 'job-id': 'pit', device: 'src', target: 'tgt', sync: 'full', speed: 4 * MiB, 'filter-node-name': 'cbw0' });
  t.deepEqual(await f.execute('query-block-exports'), [{ id: 'exp0', type: 'nbd', 'node-name': 'cbw0', 'shutting-down': false }]);
  const guest = await run('qemu-io', [
    '-f', 'raw',
    '-c', 'write -P 0x33 12M 1M',
    '-c', 'write -P 0x44 0 64k',
    '-c', 'write -z 6M 512k',
    '-c', 'aio_write -P 0x55 15M 64k',
    '-c', 'aio_flush',
    '-c', 'read -P 0x33 12M 1M',
    f.uri('src'),
  ]);
  t.is(guest.code, 0, guest.stderr);
  t.notRegex(guest.stdout, /Pattern verification failed/);
  t.false(events.some((e) => e.event === 'BLOCK_JOB_COMPLETED'), 'the guest wrote while the backup ran');
  for (let i = 0; i < 3000 && !events.some((e) => e.event === 'BLOCK_JOB_COMPLETED'); i++) await new Promise((r) => setTimeout(r, 10));
  const completed = events.find((e) => e.event === 'BLOCK_JOB_COMPLETED');
  t.like(completed?.data, { device: 'pit', len: 16 * MiB, offset: 16 * MiB });
  t.is(completed?.data?.error, undefined);
  const compare = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', '-U', target, before]);
  t.is(compare.code, 0, `the target is the source as it was at the start: ${compare.stdout}`);
  await ok('qemu-io', ['-r', '-U', '-f', 'raw', '-c', 'read -P 0x44 0 64k', '-c', 'read -P 0 6M 512k', '-c', 'read -P 0x55 15M 64k', source]).then((out) =>
    t.notRegex(out, /Pattern verification failed/, 'the source has the guest’s writes'),
  );
  t.deepEqual(await f.execute('query-block-exports'), [{ id: 'exp0', type: 'nbd', 'node-name': 'src', 'shutting-down': false }]);
});
