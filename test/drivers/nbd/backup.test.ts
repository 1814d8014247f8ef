/** blockdev-backup into an export of qemu-nbd: the image behind the export ends up equal to the source. */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { BlockLayerEvent } from '../../../core/hooks/block-layer-hooks.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { requirePeer } from '../../helpers/peers.js';
import { kill, run } from './fixture.js';

test('a full backup to an NBD target gives an image qemu-img compare finds identical', async (t) => {
  if (!requirePeer(t, 'qemu-nbd') || !requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-nbd-backup-'));
  const [src, tgt, socket, pidFile] = ['src.raw', 'tgt.raw', 'tgt.sock', 'tgt.pid'].map((name) => join(dir, name)) as [string, string, string, string];
  await run('qemu-img', ['create', '-f', 'raw', src, '16M']);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 5M 3M', '-c', 'write -P 0x33 15M 1M', src]);
  // The target starts as garbage, so holes of the source must really be copied as zeroes.
  await run('qemu-img', ['create', '-f', 'raw', tgt, '16M']);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xff 0 16M', tgt]);
  await run('qemu-nbd', ['-f', 'raw', '-x', 'exp', `--socket=${socket}`, '--persistent', '--fork', `--pid-file=${pidFile}`, tgt]);
  const pid = Number((await readFile(pidFile, 'utf8')).trim());
  const layer = await createTestLayer({ plugins: ['nbd', 'backup', 'job-commands', 'transaction', 'raw', 'file', 'qmp-block-commands'] });
  t.teardown(async () => {
    await layer.close();
    await kill(pid);
    await rm(dir, { recursive: true, force: true });
  });

  await layer.execute('blockdev-add', { driver: 'raw', 'node-name': 'src', file: { driver: 'file', filename: src } });
  await layer.execute('blockdev-add', { driver: 'nbd', 'node-name': 'tgt', server: { type: 'unix', path: socket }, export: 'exp' });
  const nodes = await layer.execute<{ 'node-name': string; file: string }[]>('query-named-block-nodes', { flat: true });
  t.is(nodes.find((n) => n['node-name'] === 'tgt')?.file, `nbd+unix:///exp?socket=${socket}`);

  const completed = new Promise<BlockLayerEvent>((resolve) =>
    layer.hooks.event.tap('nbd-backup-test', (event) => {
      if (event.event === 'BLOCK_JOB_COMPLETED') resolve(event);
    }),
  );
  await layer.execute('blockdev-backup', { 'job-id': 'j', device: 'src', target: 'tgt', sync: 'full' });
  const event = await completed;
  t.like(event.data, { device: 'j', len: 16 << 20, offset: 16 << 20 });
  t.is(event.data?.error, undefined);
  await layer.execute('blockdev-del', { 'node-name': 'tgt' });
  t.is((await run('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'raw', src, tgt])).trim(), 'Images are identical.');
});
