/**
 * Image locks (drivers/file/image-lock.ts, core/block/permissions.ts)
 * against QEMU's: what qemu-img, qemu-io and qemu-storage-daemon refuse or
 * allow while our layer holds an image, and what our tools refuse while
 * qemu-storage-daemon holds one, with QEMU's messages. /proc/locks shows
 * the bytes each side holds.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import { setReadOnly } from '../../../core/block/node-reopen.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { blocklayerCommand, startDaemon } from '../../helpers/daemons.js';
import { type CommandResult, commandResult, mustSucceed } from '../../helpers/command-result.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

async function setUp(t: ExecutionContext): Promise<{ dir: string; layer: BlockLayer }> {
  const dir = await tempDir(t, 'blocklayer-lock-');
  await mustSucceed(dir, 'qemu-img', 'create', '-q', '-f', 'qcow2', 'a.qcow2', '1M');
  await mustSucceed(dir, 'qemu-img', 'create', '-q', '-f', 'raw', 'a.raw', '1M');
  const layer = await createTestLayer({ plugins: ['file', 'raw', 'qcow2', 'qmp-block-commands'] });
  t.teardown(() => layer.close());
  return { dir, layer };
}

/** The lock bytes held on `path` (any process), from /proc/locks. */
function lockedBytes(path: string): number[] {
  const inode = statSync(path).ino;
  const bytes: number[] = [];
  for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
    const match = /OFDLCK\s+ADVISORY\s+READ\s+\S+\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s+(\d+)\s+(\d+)/.exec(line);
    if (match === null || Number(match[1]) !== inode) continue;
    for (let byte = Number(match[2]); byte <= Number(match[3]); byte++) bytes.push(byte);
  }
  return bytes.sort((a, b) => a - b);
}

const qemuImg = (dir: string, ...args: string[]): Promise<CommandResult> => commandResult('qemu-img', args, dir);
const qemuIo = (dir: string, ...args: string[]): Promise<CommandResult> => commandResult('qemu-io', args, dir);
const hint = (name: string): string => `Is another process using the image [${name}]?`;

test('a qcow2 node open read-write locks as QEMU: others may neither read it consistently nor write', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const { dir, layer } = await setUp(t);
  await layer.graph.add({ driver: 'qcow2', 'node-name': 'q', file: { driver: 'file', filename: join(dir, 'a.qcow2') } });
  t.deepEqual(lockedBytes(join(dir, 'a.qcow2')), [100, 101, 103, 201, 203]);
  const info = await qemuImg(dir, 'info', 'a.qcow2');
  t.is(info.code, 1);
  t.is(info.stderr, `qemu-img: Could not open 'a.qcow2': Failed to get shared "write" lock\n${hint('a.qcow2')}\n`);
  const write = await qemuIo(dir, '-f', 'qcow2', '-c', 'write 0 4k', 'a.qcow2');
  t.regex(write.stderr, /Failed to get "write" lock/);
  t.is((await qemuImg(dir, 'info', '-U', 'a.qcow2')).code, 0);
  await layer.execute('blockdev-del', { 'node-name': 'q' });
  t.deepEqual(lockedBytes(join(dir, 'a.qcow2')), []);
  t.is((await qemuImg(dir, 'info', 'a.qcow2')).code, 0);
});

test('read-only opens share the image with readers, not with writers; a reopen moves the locks', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const { dir, layer } = await setUp(t);
  const node = await layer.graph.add({ driver: 'qcow2', 'node-name': 'q', 'read-only': true, file: { driver: 'file', filename: join(dir, 'a.qcow2') } });
  t.deepEqual(lockedBytes(join(dir, 'a.qcow2')), [100, 201, 203]);
  t.is((await qemuImg(dir, 'info', 'a.qcow2')).code, 0);
  t.regex((await qemuIo(dir, '-f', 'qcow2', '-c', 'write 0 4k', 'a.qcow2')).stderr, /Failed to get "write" lock/);
  await setReadOnly(node, false);
  t.deepEqual(lockedBytes(join(dir, 'a.qcow2')), [100, 101, 103, 201, 203]);
  t.is((await qemuImg(dir, 'info', 'a.qcow2')).code, 1);
  await setReadOnly(node, true);
  t.deepEqual(lockedBytes(join(dir, 'a.qcow2')), [100, 201, 203]);
  t.is((await qemuImg(dir, 'info', 'a.qcow2')).code, 0);
});

test('a file node locks once a format node uses it, and a raw node only passes its users on', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const { dir, layer } = await setUp(t);
  await layer.graph.add({ driver: 'file', 'node-name': 'f', filename: join(dir, 'a.qcow2') });
  await layer.graph.add({ driver: 'raw', 'node-name': 'r', file: { driver: 'file', filename: join(dir, 'a.raw') } });
  // Nothing uses them yet, as in QEMU: no locks.
  t.deepEqual(lockedBytes(join(dir, 'a.qcow2')), []);
  t.deepEqual(lockedBytes(join(dir, 'a.raw')), []);
  await layer.graph.add({ driver: 'qcow2', 'node-name': 'q', file: 'f' });
  t.deepEqual(lockedBytes(join(dir, 'a.qcow2')), [100, 101, 103, 201, 203]);
  await layer.execute('blockdev-del', { 'node-name': 'q' });
  t.deepEqual(lockedBytes(join(dir, 'a.qcow2')), []);
  // An internal open uses its root: the raw image's file is locked through it.
  const used = await layer.graph.open({ driver: 'raw', file: { driver: 'file', filename: join(dir, 'a.raw') }, 'read-only': true }, { readOnly: true });
  t.deepEqual(lockedBytes(join(dir, 'a.raw')), [100, 201, 203]);
  await layer.graph.closeIfUnused(used);
  t.deepEqual(lockedBytes(join(dir, 'a.raw')), []);
});

test('two opens of one image in this process conflict as two processes would; locking=off takes none', async (t) => {
  const { dir, layer } = await setUp(t);
  const file = { driver: 'file', filename: join(dir, 'a.qcow2') };
  await layer.graph.add({ driver: 'qcow2', 'node-name': 'q1', file });
  const error = await t.throwsAsync(layer.graph.add({ driver: 'qcow2', 'node-name': 'q2', file: { ...file } }));
  t.is(error?.message, 'Failed to get "write" lock');
  t.is((error as { hint?: string } | undefined)?.hint, hint(join(dir, 'a.qcow2')));
  t.is(layer.graph.node('q2'), undefined);
  await t.throwsAsync(layer.graph.add({ driver: 'qcow2', 'node-name': 'q3', 'read-only': true, file: { ...file } }), { message: 'Failed to get shared "write" lock' });
  await layer.graph.add({ driver: 'qcow2', 'node-name': 'q4', 'read-only': true, file: { ...file, locking: 'off' } });
  t.deepEqual(lockedBytes(join(dir, 'a.qcow2')), [100, 101, 103, 201, 203]);
});

/** A daemon of `kind` holding a.qcow2 (read-write) and a.raw (unused) of `dir`, and its QMP client. */
async function holdingDaemon(t: ExecutionContext, kind: 'qemu' | 'ours', dir: string) {
  const daemon = await startDaemon(kind, [
    '--blockdev', `driver=file,filename=${join(dir, 'a.qcow2')},node-name=f`,
    '--blockdev', 'driver=qcow2,file=f,node-name=q',
    '--blockdev', `driver=raw,file.driver=file,file.filename=${join(dir, 'a.raw')},node-name=r`,
  ]);
  t.teardown(() => daemon.stop());
  const client = await QmpClient.connect(daemon.socket, { negotiate: true });
  t.teardown(() => client.close());
  return { daemon, client };
}

test('while a daemon holds an image, the tools and blockdev-add refuse it as QEMU does, and it stays intact', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-storage-daemon')) return;
  const { dir } = await setUp(t);
  const second = { driver: 'qcow2', 'node-name': 'q2', file: { driver: 'file', filename: join(dir, 'a.qcow2') } };
  const replies = [];
  for (const kind of ['qemu', 'ours'] as const) {
    const { daemon, client } = await holdingDaemon(t, kind, dir);
    t.deepEqual(lockedBytes(join(dir, 'a.qcow2')), [100, 101, 103, 201, 203], kind);
    t.deepEqual(lockedBytes(join(dir, 'a.raw')), [], kind);
    replies.push(await client.execute('blockdev-add', second));
    const cases = [
      ['info', '-f', 'qcow2', 'a.qcow2'],
      ['check', '-f', 'qcow2', 'a.qcow2'],
      ['convert', '-f', 'raw', '-O', 'raw', 'a.raw', 'a.qcow2'],
      ['create', '-q', '-f', 'qcow2', 'a.qcow2', '1M'],
      ['resize', '-f', 'qcow2', 'a.qcow2', '2M'],
    ];
    for (const args of cases) {
      const [command, argv] = blocklayerCommand(args);
      const [ours, theirs] = await Promise.all([commandResult(command, argv, dir), qemuImg(dir, ...args)]);
      t.not(theirs.code, 0, `${kind}: ${args.join(' ')}`);
      t.is(ours.code, theirs.code, `${kind}: ${args.join(' ')}`);
      t.is(ours.stderr.replace(/^blocklayer [a-z]+: /gm, ''), theirs.stderr.replace(/^qemu-img: /gm, ''), `${kind}: ${args.join(' ')}`);
    }
    // Commands that write a file of their own: each tool its own output, the same outcome.
    await mustSucceed(dir, 'qemu-img', 'create', '-q', '-f', 'qcow2', 'ours.qcow2', '1M');
    await mustSucceed(dir, 'qemu-img', 'create', '-q', '-f', 'qcow2', 'theirs.qcow2', '1M');
    for (const share of [[], ['-U']]) {
      for (const args of [['dd', ...share, '-f', 'qcow2', 'if=a.qcow2', 'bs=64k', 'count=1', 'of=OUT.raw'], ['rebase', ...share, '-f', 'qcow2', '-F', 'qcow2', '-b', 'a.qcow2', 'OUT.qcow2']]) {
        const [command, argv] = blocklayerCommand(args.map((arg) => arg.replace('OUT', 'ours')));
        const ours = await commandResult(command, argv, dir);
        const theirs = await qemuImg(dir, ...args.map((arg) => arg.replace('OUT', 'theirs')));
        t.is(theirs.code, share.length === 0 ? 1 : 0, `${kind}: ${args.join(' ')}: ${theirs.stderr}`);
        t.is(ours.code, theirs.code, `${kind}: ${args.join(' ')}`);
        t.is(ours.stderr.replace(/^blocklayer [a-z]+: /gm, ''), theirs.stderr.replace(/^qemu-img: /gm, ''), `${kind}: ${args.join(' ')}`);
      }
    }
    // A second daemon cannot add it either: the same message, with the hint, from both.
    const blockdev = ['--blockdev', 'driver=qcow2,node-name=x,file.driver=file,file.filename=a.qcow2'];
    const [daemonCommand, daemonArgv] = blocklayerCommand(['daemon', ...blockdev]);
    const [ourDaemon, theirDaemon] = await Promise.all([commandResult(daemonCommand, daemonArgv, dir), commandResult('qemu-storage-daemon', blockdev, dir)]);
    t.is(theirDaemon.code, 1, kind);
    t.is(ourDaemon.code, theirDaemon.code, kind);
    t.is(ourDaemon.stderr.replace(/^blocklayer: /, ''), theirDaemon.stderr.replace(/^qemu-storage-daemon: /, ''), kind);
    // -U reads it; the unused raw image is not locked.
    const [command, argv] = blocklayerCommand(['info', '-U', '-f', 'qcow2', 'a.qcow2']);
    t.is((await commandResult(command, argv, dir)).code, 0, kind);
    t.is((await qemuIo(dir, '-f', 'raw', '-c', 'write 0 4k', 'a.raw')).code, 0, kind);
    await daemon.stop();
  }
  t.deepEqual(replies[1], replies[0]);
  t.deepEqual(replies[0], { error: { class: 'GenericError', desc: 'Failed to get "write" lock' } });
  const check = await qemuImg(dir, 'check', '--output=json', 'a.qcow2');
  t.is(check.code, 0, check.stderr);
  t.like(JSON.parse(check.stdout), { format: 'qcow2', 'check-errors': 0 });
});
