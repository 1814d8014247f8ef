/**
 * Persistent dirty bitmaps through the daemon, with qemu-storage-daemon 7.2
 * as the oracle: both daemons run the same steps on their own copy of an
 * image that qemu-img gave two bitmaps, and what they show and leave
 * behind must be the same. Guest writes go through each daemon's NBD
 * export, by qemu-io; what the images hold afterwards is read by QEMU
 * (qemu-img info, qemu-img check, and qemu-nbd -B with nbdinfo).
 *
 * 1. Clean: the bitmaps load (listed with their counts), two persistent
 *    bitmaps are added, the guest writes, one bitmap is removed, `quit`.
 * 2. Crash: a persistent bitmap added and one removed, guest writes,
 *    then SIGKILL. The removed one is out of the image already, the
 *    others are marked in use; opened again they are inconsistent and can
 *    only be removed.
 *
 * 3. Snapshot and commit: blockdev-snapshot-sync makes the image under
 *    the new overlay read-only, which stores its bitmaps then; an active
 *    commit makes it writable again and its writes are recorded.
 *
 * QEMU's outcomes are recorded below, so that our daemon is held to them
 * even where qemu-storage-daemon is missing.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test, { type ExecutionContext } from 'ava';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { startDaemon } from '../../helpers/daemons.js';
import { havePeers, peerPath, requirePeer } from '../../helpers/peers.js';
import { qemuDirtyRanges, qemuImageBitmaps } from '../../helpers/qemu-bitmaps.js';
import { tempDir } from '../../helpers/temp-dir.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Outcome {
  /** dirty-bitmaps of the node as it was opened, then before quit. */
  loaded: unknown;
  beforeQuit: unknown;
  /** qemu-img info's bitmaps after quit, and each one's dirty ranges by qemu-nbd. */
  stored: unknown;
  dirty: Record<string, { offset: number; length: number }[]>;
  checkAfterQuit: string;
  /** After the SIGKILL: qemu-img info's bitmaps, then what the daemon shows when it opens the image again. */
  afterKill: unknown;
  reopened: unknown;
  clearInconsistent: unknown;
  checkAfterKill: string;
}

function qemuImg(args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

async function bitmapsOf(image: string): Promise<unknown> {
  return (await qemuImageBitmaps(image)) ?? [];
}

/** qemu-img check's verdict, without the file-specific numbers. */
function checkVerdict(image: string): string {
  const report = JSON.parse(qemuImg(['check', '--output=json', '-f', 'qcow2', image])) as Record<string, unknown>;
  return `leaks ${String(report.leaks ?? 0)}, corruptions ${String(report.corruptions ?? 0)}, check-errors ${String(report['check-errors'] ?? 0)}`;
}

async function diskBitmaps(client: QmpClient): Promise<unknown> {
  const nodes = (await client.execute('query-named-block-nodes', { flat: true })).return as { 'node-name': string; 'dirty-bitmaps'?: unknown }[];
  return nodes.find((n) => n['node-name'] === 'disk')?.['dirty-bitmaps'];
}

async function run(t: ExecutionContext, kind: 'qemu' | 'ours'): Promise<Outcome> {
  const dir = await tempDir(t, `blocklayer-persistent-${kind}-`);
  const image = join(dir, 'disk.qcow2');
  const nbd = join(dir, 'nbd.sock');
  qemuImg(['create', '-q', '-f', 'qcow2', image, '16M']);
  qemuImg(['bitmap', '--add', image, 'b0']);
  qemuImg(['bitmap', '--add', '-g', '4096', '--disable', image, 'b1']);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 64k', image]);
  const guestWrite = (...commands: string[]) =>
    execFileSync('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), `nbd+unix:///disk?socket=${nbd}`], { stdio: 'ignore' });

  const open = async () => {
    const daemon = await startDaemon(kind, ['--blockdev', `driver=qcow2,node-name=disk,file.driver=file,file.filename=${image}`]);
    t.teardown(() => daemon.stop());
    const client = await QmpClient.connect(daemon.socket, { negotiate: true });
    t.teardown(() => client.close());
    const step = async (command: string, args: Record<string, unknown>) => t.deepEqual(await client.execute(command, args), { return: {} }, `${kind}: ${command}`);
    await step('nbd-server-start', { addr: { type: 'unix', data: { path: nbd } } });
    await step('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'disk', writable: true });
    const exited = new Promise((resolve) => daemon.process.once('exit', resolve));
    return { daemon, client, step, exited };
  };

  const first = await open();
  const loaded = await diskBitmaps(first.client);
  await first.step('block-dirty-bitmap-add', { node: 'disk', name: 'p', persistent: true, granularity: 4096 });
  await first.step('block-dirty-bitmap-add', { node: 'disk', name: 'v', persistent: true, disabled: true });
  guestWrite('write -P 2 1M 64k', 'write -P 3 5188k 4k');
  await first.step('block-dirty-bitmap-remove', { node: 'disk', name: 'b1' });
  const beforeQuit = await diskBitmaps(first.client);
  await first.client.execute('quit');
  await first.exited;
  const stored = await bitmapsOf(image);
  const dirty = Object.fromEntries(await Promise.all(['b0', 'p', 'v'].map(async (name) => [name, await qemuDirtyRanges(image, name)] as const)));
  const checkAfterQuit = checkVerdict(image);

  const second = await open();
  await second.step('block-dirty-bitmap-add', { node: 'disk', name: 'c', persistent: true });
  await second.step('block-dirty-bitmap-remove', { node: 'disk', name: 'v' });
  guestWrite('write -P 4 8M 64k');
  second.daemon.process.kill('SIGKILL');
  await second.exited;
  const afterKill = await bitmapsOf(image);

  const third = await open();
  const reopened = await diskBitmaps(third.client);
  const clearInconsistent = await third.client.execute('block-dirty-bitmap-clear', { node: 'disk', name: 'b0' });
  for (const name of ['b0', 'p']) await third.step('block-dirty-bitmap-remove', { node: 'disk', name });
  await third.client.execute('quit');
  await third.exited;
  return { loaded, beforeQuit, stored, dirty, checkAfterQuit, afterKill, reopened, clearInconsistent, checkAfterKill: checkVerdict(image) };
}

const bitmap = (name: string, count: number, granularity: number, recording: boolean, extra: Record<string, unknown> = {}) => ({
  name,
  recording,
  persistent: true,
  busy: false,
  granularity,
  count,
  ...extra,
});

/** What qemu-storage-daemon 7.2 did. */
const QEMU: Outcome = {
  loaded: [bitmap('b1', 0, 4096, false), bitmap('b0', 65536, 65536, true)],
  beforeQuit: [bitmap('v', 0, 65536, false), bitmap('p', 69632, 4096, true), bitmap('b0', 196608, 65536, true)],
  stored: [
    { flags: ['auto'], name: 'b0', granularity: 65536 },
    { flags: [], name: 'v', granularity: 65536 },
    { flags: ['auto'], name: 'p', granularity: 4096 },
  ],
  dirty: {
    b0: [
      { offset: 0, length: 64 * KiB },
      { offset: MiB, length: 64 * KiB },
      { offset: 5184 * KiB, length: 64 * KiB },
    ],
    p: [
      { offset: MiB, length: 64 * KiB },
      { offset: 5188 * KiB, length: 4 * KiB },
    ],
    v: [],
  },
  checkAfterQuit: 'leaks 0, corruptions 0, check-errors 0',
  afterKill: [
    { flags: ['in-use', 'auto'], name: 'b0', granularity: 65536 },
    { flags: ['in-use', 'auto'], name: 'p', granularity: 4096 },
  ],
  reopened: [bitmap('p', 0, 4096, false, { inconsistent: true }), bitmap('b0', 0, 65536, false, { inconsistent: true })],
  clearInconsistent: { error: { class: 'GenericError', desc: "Bitmap 'b0' is inconsistent and cannot be used" } },
  checkAfterKill: 'leaks 0, corruptions 0, check-errors 0',
};

test('persistent bitmaps: loaded, recorded, stored at quit, left in use by a SIGKILL, as qemu-storage-daemon 7.2 does', async (t) => {
  if (!havePeers(t) || !requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-nbd') || !requirePeer(t, 'nbdinfo')) return;
  if (peerPath('qemu-storage-daemon') !== undefined) t.deepEqual(await run(t, 'qemu'), QEMU, 'qemu-storage-daemon still does as recorded');
  t.deepEqual(await run(t, 'ours'), QEMU);
});

interface SnapshotOutcome {
  /** qemu-img info's bitmaps and b0's dirty ranges once the image is under the overlay. */
  underOverlay: unknown;
  dirtyUnderOverlay: { offset: number; length: number }[];
  clearReadOnly: unknown;
  /** While the commit's base is writable again (the job over): its bitmaps marked in use. */
  whileWritable: unknown;
  /** After an active commit into it and quit. */
  afterCommit: unknown;
  dirtyAfterCommit: { offset: number; length: number }[];
  check: string;
}

async function runSnapshot(t: ExecutionContext, kind: 'qemu' | 'ours'): Promise<SnapshotOutcome> {
  const dir = await tempDir(t, `blocklayer-persistent-snapshot-${kind}-`);
  const image = join(dir, 'disk.qcow2');
  const nbd = join(dir, 'nbd.sock');
  qemuImg(['create', '-q', '-f', 'qcow2', image, '8M']);
  qemuImg(['bitmap', '--add', image, 'b0']);
  const daemon = await startDaemon(kind, ['--blockdev', `driver=qcow2,node-name=disk,file.driver=file,file.filename=${image}`]);
  t.teardown(() => daemon.stop());
  const exited = new Promise((resolve) => daemon.process.once('exit', resolve));
  const client = await QmpClient.connect(daemon.socket, { negotiate: true });
  t.teardown(() => client.close());
  const step = async (command: string, args: Record<string, unknown>) => t.deepEqual(await client.execute(command, args), { return: {} }, `${kind}: ${command}`);
  const guestWrite = (command: string) => execFileSync('qemu-io', ['-f', 'raw', '-c', command, `nbd+unix:///disk?socket=${nbd}`], { stdio: 'ignore' });
  await step('nbd-server-start', { addr: { type: 'unix', data: { path: nbd } } });
  await step('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'disk', name: 'disk', writable: true });
  guestWrite('write -P 1 1M 64k');
  await step('blockdev-snapshot-sync', { 'node-name': 'disk', 'snapshot-file': join(dir, 'ov.qcow2'), 'snapshot-node-name': 'ov', format: 'qcow2' });
  const underOverlay = await bitmapsOf(image);
  const dirtyUnderOverlay = await qemuDirtyRanges(image, 'b0');
  const clearReadOnly = await client.execute('block-dirty-bitmap-clear', { node: 'disk', name: 'b0' });
  guestWrite('write -P 2 3M 64k');
  await step('block-commit', { 'job-id': 'c', device: 'ov' });
  await client.waitEvent('BLOCK_JOB_READY');
  await step('job-complete', { id: 'c' });
  await client.waitEvent('BLOCK_JOB_COMPLETED');
  for (let i = 0; i < 200 && ((await client.execute('query-jobs')).return as unknown[]).length > 0; i++) await sleep(10);
  const whileWritable = await bitmapsOf(image);
  guestWrite('write -P 3 5M 4k');
  await client.execute('quit');
  await exited;
  return { underOverlay, dirtyUnderOverlay, clearReadOnly, whileWritable, afterCommit: await bitmapsOf(image), dirtyAfterCommit: await qemuDirtyRanges(image, 'b0'), check: checkVerdict(image) };
}

/** What qemu-storage-daemon 7.2 did. */
const QEMU_SNAPSHOT: SnapshotOutcome = {
  underOverlay: [{ flags: ['auto'], name: 'b0', granularity: 65536 }],
  dirtyUnderOverlay: [{ offset: MiB, length: 64 * KiB }],
  clearReadOnly: { error: { class: 'GenericError', desc: "Bitmap 'b0' is readonly and cannot be modified" } },
  whileWritable: [{ flags: ['in-use', 'auto'], name: 'b0', granularity: 65536 }],
  afterCommit: [{ flags: ['auto'], name: 'b0', granularity: 65536 }],
  dirtyAfterCommit: [
    { offset: MiB, length: 64 * KiB },
    { offset: 3 * MiB, length: 64 * KiB },
    { offset: 5 * MiB, length: 64 * KiB },
  ],
  check: 'leaks 0, corruptions 0, check-errors 0',
};

test('persistent bitmaps under an external snapshot: stored as the image turns read-only, recording again once a commit writes into it', async (t) => {
  if (!havePeers(t) || !requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-nbd') || !requirePeer(t, 'nbdinfo')) return;
  if (peerPath('qemu-storage-daemon') !== undefined) t.deepEqual(await runSnapshot(t, 'qemu'), QEMU_SNAPSHOT, 'qemu-storage-daemon still does as recorded');
  t.deepEqual(await runSnapshot(t, 'ours'), QEMU_SNAPSHOT);
});
