/**
 * The same blockdev-create conversation with qemu-storage-daemon 7.2 and
 * with our daemon, each in its own directory: the replies must match and
 * the images must be byte for byte the same — including what qemu-img
 * create cannot make (a backing file without a format) and formatting a
 * node that already holds a larger image (QEMU writes over it without
 * truncating; so do we).
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import test from 'ava';
import { QmpClient, type QmpMessage } from '../../../core/qmp/qmp-client.js';
import { startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** qcow2 options per image; each image's file is created first, the same way. */
const IMAGES: [string, Record<string, unknown>][] = [
  ['plain.qcow2', { size: 64 * MiB }],
  ['backing-no-format.qcow2', { size: MiB, 'backing-file': '/nonexistent/base.qcow2' }],
  ['backing-v2.qcow2', { size: 8 * MiB, version: 'v2', 'backing-file': 'base.qcow2', 'backing-fmt': 'qcow2' }],
  ['prealloc.qcow2', { size: 8 * MiB, 'cluster-size': 4096, preallocation: 'metadata', 'refcount-bits': 8 }],
  ['falloc.qcow2', { size: 8 * MiB + 512, 'cluster-size': 4096, preallocation: 'falloc', 'refcount-bits': 2 }],
  ['full.qcow2', { size: 3 * MiB, preallocation: 'full' }],
];

/** Replies that say when the job concluded: query-jobs until no job runs. */
async function concluded(client: QmpClient): Promise<QmpMessage> {
  for (let i = 0; i < 500; i++) {
    const reply = await client.execute('query-jobs');
    if ((reply.return as { status: string }[]).every((j) => j.status === 'concluded')) return reply;
    await sleep(10);
  }
  throw new Error('the job did not conclude');
}

/** Runs the conversation in `dir`; returns every reply, with `dir` written as $IMG. */
async function converse(socket: string, dir: string): Promise<unknown[]> {
  const client = await QmpClient.connect(socket, { negotiate: true });
  const replies: unknown[] = [];
  const send = async (command: string, args: Record<string, unknown>): Promise<void> => {
    replies.push(await client.execute(command, args));
  };
  const create = async (id: string, options: Record<string, unknown>): Promise<void> => {
    await send('blockdev-create', { 'job-id': id, options });
    replies.push(await concluded(client));
    await send('job-dismiss', { id });
  };
  for (const [i, [name, options]] of IMAGES.entries()) {
    await create(`f${i}`, { driver: 'file', filename: join(dir, name), size: 0 });
    await send('blockdev-add', { driver: 'file', 'node-name': `n${i}`, filename: join(dir, name) });
    await create(`q${i}`, { driver: 'qcow2', file: `n${i}`, ...options });
  }
  // Format the 64 MiB image's node again, smaller, without recreating the file.
  await create('again', { driver: 'qcow2', file: 'n0', size: MiB, 'cluster-size': 512 });
  for (const i of IMAGES.keys()) await send('blockdev-del', { 'node-name': `n${i}` });
  await client.close();
  return JSON.parse(JSON.stringify(replies).replaceAll(dir, '$IMG')) as unknown[];
}

test('blockdev-create makes the same images, with the same replies, as qemu-storage-daemon', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon') || !requirePeer(t, 'qemu-img')) return;
  const qemuDir = await tempDir(t, 'blocklayer-bdc-qemu-');
  const oursDir = await tempDir(t, 'blocklayer-bdc-ours-');
  // Registered after tempDir's, so these run first.
  const qemu = await startDaemon('qemu', []);
  t.teardown(() => qemu.stop());
  const ours = await startDaemon('ours', []);
  t.teardown(() => ours.stop());
  const [expected, actual] = await Promise.all([converse(qemu.socket, qemuDir), converse(ours.socket, oursDir)]);
  t.deepEqual(actual, expected);
  for (const [name] of IMAGES) {
    const [a, b] = await Promise.all([readFile(join(oursDir, name)), readFile(join(qemuDir, name))]);
    t.is(a.length, b.length, `${name}: length`);
    t.true(a.equals(b), `${name}: the same bytes`);
  }
  // The images without a backing file pass qemu-img check.
  for (const name of ['plain.qcow2', 'prealloc.qcow2', 'falloc.qcow2', 'full.qcow2']) {
    const { stdout } = await run('qemu-img', ['check', '-f', 'qcow2', join(oursDir, name)]);
    t.regex(stdout, /^No errors were found on the image\./, name);
  }
});
