/**
 * The pivot with a real NBD export, as QEMU's harness ran s6: the source is
 * exported by the nbd-server plugin, qemu-io writes to it over NBD while the
 * mirror runs (they are mirrored) and after job-complete (they land on the
 * target, which the export now uses). Skipped if no nbd-server plugin is
 * built in.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { BlockLayer } from '../../../core/block-layer.js';
import { defaultManifest } from '../../../core/plugin/default-manifest.js';
import { requirePeer } from '../../helpers/peers.js';
import { qemuImg, qemuIo } from './iotest-images.js';
import { EventLog, MiB } from './mirror-session.js';

const run = promisify(execFile);

test('an NBD export of the source moves to the target on completion; guest writes over NBD before and after', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const builtin = defaultManifest();
  const wanted = ['file', 'raw', 'qmp-block-commands', 'job-commands', 'mirror', 'nbd-server'];
  const entries = builtin.manifest.plugins.filter((p) => wanted.includes(p.name));
  if (!entries.some((p) => p.name === 'nbd-server')) {
    t.log('skipped: no nbd-server plugin is built in');
    t.pass();
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-mirror-nbd-'));
  const layer = await BlockLayer.create({ manifest: { plugins: entries.map((e) => ({ ...e, enabled: true })) }, baseDir: builtin.baseDir });
  try {
    const log = new EventLog(layer);
    const image = (name: string): string => join(dir, `${name}.raw`);
    qemuImg('create', '-q', '-f', 'raw', image('src'), '16M');
    qemuIo(image('src'), 'raw', 'write -P 0x11 0 1M', 'write -P 0x22 8M 2M');
    qemuImg('create', '-q', '-f', 'raw', image('m1'), '16M');
    for (const name of ['src', 'm1']) {
      await layer.execute('blockdev-add', { driver: 'raw', 'node-name': name, file: { driver: 'file', filename: image(name) } });
    }
    const socket = join(dir, 'nbd.sock');
    await layer.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
    await layer.execute('block-export-add', { type: 'nbd', id: 'exp0', 'node-name': 'src', writable: true, name: 'src' });
    const uri = `nbd+unix:///src?socket=${socket}`;
    const exportNode = async (): Promise<unknown> => (await layer.execute<{ 'node-name': string }[]>('query-block-exports'))[0]!['node-name'];

    await layer.execute('blockdev-mirror', { 'job-id': 'mir1', device: 'src', target: 'm1', sync: 'full', 'auto-finalize': false });
    await log.wait('BLOCK_JOB_READY', 'mir1');
    t.regex(String(await exportNode()), /^#block\d+$/, 'the export sits on the mirror_top filter');
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 2M 64k', uri]);
    await layer.execute('job-complete', { id: 'mir1' });
    await log.wait('BLOCK_JOB_PENDING', 'mir1');
    t.regex(String(await exportNode()), /^#block\d+$/, 'pending: not switched yet (QEMU M5)');
    await layer.execute('job-finalize', { id: 'mir1' });
    const completed = await log.wait('BLOCK_JOB_COMPLETED', 'mir1');
    t.like(completed.data, { len: 16 * MiB + 64 * 1024, offset: 16 * MiB + 64 * 1024 });
    t.is(await exportNode(), 'm1');
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 4M 64k', uri]);
    await layer.execute('block-export-del', { id: 'exp0' });
    // The write before the pivot is on both; the one after only on the target.
    const check = async (path: string, ...reads: string[]): Promise<string> =>
      (await run('qemu-io', ['-f', 'raw', ...reads.flatMap((r) => ['-c', r]), path])).stdout;
    const target = await check(image('m1'), 'read -P 0x5a 2M 64k', 'read -P 0x77 4M 64k', 'read -P 0x22 8M 2M');
    const source = await check(image('src'), 'read -P 0x5a 2M 64k', 'read -P 0 4M 64k');
    t.notRegex(target, /failed/i, target);
    t.notRegex(source, /failed/i, source);
  } finally {
    await layer.lifecycle.requestShutdown('test over');
    await layer.close();
    await rm(dir, { recursive: true, force: true });
  }
});
