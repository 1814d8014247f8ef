/**
 * Incremental backup across restarts, as a backup tool runs it: the
 * anchor (a persistent bitmap added with a full backup) in one daemon run;
 * writes made while our daemon is down, by QEMU (qemu-io loads the bitmap,
 * records the write and stores it back); writes through our NBD export in
 * the next run; then an incremental backup into an overlay of the full
 * one. qemu-img compare finds the overlay equal to the disk, and qemu-img
 * map shows that it holds exactly the clusters written since the anchor.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const KiB = 1024;
const MiB = 1024 * KiB;

async function daemonRun(t: ExecutionContext, image: string, nbd: string): Promise<{ client: QmpClient; quit(): Promise<void> }> {
  const daemon = await startDaemon('ours', ['--blockdev', `driver=qcow2,node-name=disk,file.driver=file,file.filename=${image}`]);
  t.teardown(() => daemon.stop());
  const exited = new Promise((resolve) => daemon.process.once('exit', resolve));
  const client = await QmpClient.connect(daemon.socket, { negotiate: true });
  t.teardown(() => client.close());
  t.deepEqual(await client.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbd } } }), { return: {} });
  t.deepEqual(await client.execute('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'disk', writable: true }), { return: {} });
  return {
    client,
    async quit() {
      await client.execute('quit');
      await exited;
    },
  };
}

/** The job (the only one running) completes without error. */
async function waitJob(t: ExecutionContext, client: QmpClient, id: string): Promise<void> {
  const event = await client.waitEvent('BLOCK_JOB_COMPLETED');
  t.like(event.data, { device: id });
  t.is((event.data as { error?: string }).error, undefined, `${id} completed without error`);
}

test('an incremental backup after a restart and offline writes by QEMU copies exactly what changed since the anchor', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t, 'blocklayer-persistent-incremental-');
  const image = join(dir, 'disk.qcow2');
  const nbd = join(dir, 'nbd.sock');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 4M', '-c', 'write -P 2 8M 2M', image], { stdio: 'ignore' });

  const day1 = await daemonRun(t, image, nbd);
  const anchor = await day1.client.execute('transaction', {
    actions: [
      { type: 'block-dirty-bitmap-add', data: { node: 'disk', name: 'b0', persistent: true } },
      { type: 'drive-backup', data: { 'job-id': 'full', device: 'disk', target: join(dir, 'full.qcow2'), format: 'qcow2', sync: 'full' } },
    ],
  });
  t.deepEqual(anchor, { return: {} });
  await waitJob(t, day1.client, 'full');
  await day1.quit();

  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 3 1M 64k', image], { stdio: 'ignore' });

  const day2 = await daemonRun(t, image, nbd);
  execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 4 12M 4k', '-c', 'write -P 5 8M 64k', `nbd+unix:///disk?socket=${nbd}`], { stdio: 'ignore' });
  const overlay = join(dir, 'inc.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(dir, 'full.qcow2'), '-F', 'qcow2', overlay]);
  t.deepEqual(await day2.client.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'inc', file: { driver: 'file', filename: overlay } }), { return: {} });
  t.deepEqual(await day2.client.execute('blockdev-backup', { 'job-id': 'inc', device: 'disk', target: 'inc', sync: 'incremental', bitmap: 'b0' }), { return: {} });
  await waitJob(t, day2.client, 'inc');
  await day2.quit();

  execFileSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', image, overlay]);
  const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-f', 'qcow2', overlay], { encoding: 'utf8' })) as {
    start: number;
    length: number;
    depth: number;
  }[];
  t.deepEqual(
    map.filter((e) => e.depth === 0).map(({ start, length }) => ({ start, length })),
    [
      { start: MiB, length: 64 * KiB },
      { start: 8 * MiB, length: 64 * KiB },
      { start: 12 * MiB, length: 64 * KiB },
    ],
    'the overlay holds the clusters written since the anchor, and only those',
  );
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-f', 'qcow2', image], { encoding: 'utf8' })) as {
    'format-specific': { data: { bitmaps: unknown } };
  };
  t.deepEqual(info['format-specific'].data.bitmaps, [{ flags: ['auto'], name: 'b0', granularity: 64 * KiB }], 'b0 stays for the next increment');
});
