/**
 * The same command line and the same QMP conversation against
 * qemu-storage-daemon 7.2 and against our daemon: every reply must match,
 * QEMU being the oracle. Where QEMU's output is unordered (hash-ordered
 * json: filenames, newest-first node lists) both sides are normalised the
 * same way.
 */
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import test from 'ava';
import { QmpClient, type QmpMessage } from '../../core/qmp/qmp-client.js';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand, startDaemon } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';
import { tempDir } from '../helpers/temp-dir.js';

type Step = { execute: string; arguments?: Record<string, unknown>; normalise?: (reply: QmpMessage) => unknown };

/** json: filenames are QEMU dicts printed in hash order; compare them parsed. */
function parseJsonFilename(name: unknown): unknown {
  return typeof name === 'string' && name.startsWith('json:') ? JSON.parse(name.slice(5)) : name;
}

function nodeSummary(reply: QmpMessage): unknown {
  const nodes = (reply.return as Record<string, any>[]).map((n) => ({
    // Names QEMU makes up for nested nodes carry a counter and a random part.
    'node-name': String(n['node-name']).replace(/^#block\d+$/, '#block'),
    drv: n.drv,
    ro: n.ro,
    file: parseJsonFilename(n.file),
    backing_file_depth: n.backing_file_depth,
    detect_zeroes: n.detect_zeroes,
    cache: n.cache,
    image: { 'virtual-size': n.image['virtual-size'], filename: parseJsonFilename(n.image.filename), format: n.image.format },
  }));
  return nodes.sort((a, b) => String(a['node-name']).localeCompare(String(b['node-name'])));
}

function script(image: string, qcow2: string, socket: string): Step[] {
  const add = (args: Record<string, unknown>): Step => ({ execute: 'blockdev-add', arguments: args });
  return [
    { execute: 'query-named-block-nodes', arguments: { flat: true }, normalise: nodeSummary },
    add({ driver: 'foo', 'node-name': 'x' }),
    add({ 'node-name': 'x' }),
    add({ driver: 'file', 'node-name': 'x' }),
    add({ driver: 'file', 'node-name': 'x', filename: '' }),
    add({ driver: 'file', 'node-name': 'x', filename: socket }),
    add({ driver: 'file', 'node-name': 'x', filename: '/nonexistent/a' }),
    add({ driver: 'file', 'node-name': 'x', filename: '/tmp' }),
    add({ driver: 'file', 'node-name': 'f0', filename: image }),
    add({ driver: 'file', 'node-name': 'f1', filename: image, bogus: 1 }),
    add({ driver: 'file', filename: image }),
    add({ driver: 'raw', file: { driver: 'file', filename: image } }),
    add({ driver: 'raw', 'node-name': 'r1', file: 5 }),
    add({ driver: 'raw', 'node-name': 'r1', file: 'nonode' }),
    add({ driver: 'raw', 'node-name': 'r1' }),
    add({ driver: 'raw', 'node-name': '1bad', file: 'f0' }),
    add({ driver: 'raw', 'node-name': 'a'.repeat(40), file: 'f0' }),
    add({ driver: 'raw', 'node-name': 'a', file: { driver: 'file', filename: image, aio: 'bad' } }),
    add({ driver: 'raw', 'node-name': 'a', file: { driver: 'file' } }),
    add({ driver: 'raw', 'node-name': 'a', file: { driver: 'nope' } }),
    add({ driver: 'raw', 'node-name': 'a', file: { driver: 'file', filename: image, x: 1 } }),
    add({ driver: 'raw', 'node-name': 'a', file: 'f0', cache: { direct: 'x' } }),
    add({ driver: 'raw', 'node-name': 'a', file: 'f0', cache: 5 }),
    add({ driver: 'raw', 'node-name': 'a', file: 'f0', 'read-only': 'yes' }),
    add({ driver: 'raw', 'node-name': 'a', file: 'f0', 'detect-zeroes': 'x' }),
    add({ driver: 5, 'node-name': 'a' }),
    add({ driver: 'raw', 'node-name': 5, file: 'f0' }),
    add({ driver: 'raw', 'node-name': 'a', file: 'f0', size: 1 }),
    add({ driver: 'raw', 'node-name': 'a', file: 'f0', offset: 100000000 }),
    add({ driver: 'raw', 'node-name': 'a', file: 'f0', size: 100000000 }),
    add({ driver: 'null-co', 'node-name': 'n0', size: 'x' }),
    add({ driver: 'null-co', 'node-name': 'n0', size: 1.5 }),
    add({ driver: 'null-co', 'node-name': 'n0', 'force-share': true }),
    add({ driver: 'null-co', 'node-name': 'n0' }),
    add({ driver: 'null-co', 'node-name': 'n1', size: 1073741824, 'read-zeroes': true }),
    add({ driver: 'raw', 'node-name': 'win', file: 'n0', offset: 513, size: 4096 }),
    add({ driver: 'raw', 'node-name': 'ro1', file: { driver: 'file', filename: image, 'read-only': true } }),
    add({ driver: 'file', 'node-name': 'fro', filename: image, 'read-only': true }),
    add({ driver: 'raw', 'node-name': 'rw-over-ro', file: 'fro' }),
    { execute: 'query-named-block-nodes', normalise: nodeSummary },
    { execute: 'blockdev-del', arguments: { 'node-name': 'f0' } },
    { execute: 'blockdev-del', arguments: { 'node-name': 'nope' } },
    { execute: 'blockdev-del', arguments: {} },
    { execute: 'blockdev-del', arguments: { 'node-name': 1 } },
    { execute: 'blockdev-del', arguments: { 'node-name': 'win', force: true } },
    { execute: 'blockdev-del', arguments: { 'node-name': 'n0' } },
    { execute: 'blockdev-del', arguments: { 'node-name': 'win' } },
    { execute: 'blockdev-del', arguments: { 'node-name': 'n0' } },
    { execute: 'blockdev-del', arguments: { 'node-name': 'rw-over-ro' } },
    // Unsigned members of the wrong JSON type: QEMU visits them all as uint64, and words that as a bad value.
    { execute: 'block-dirty-bitmap-add', arguments: { node: 'disk0', name: 'b', granularity: true } },
    { execute: 'block-dirty-bitmap-add', arguments: { node: 'disk0', name: 'b', granularity: 1.5 } },
    { execute: 'block-dirty-bitmap-add', arguments: { node: 'disk0', name: 'b', granularity: -1 } },
    { execute: 'nbd-server-start', arguments: { addr: { type: 'unix', data: { path: 'x' } }, 'max-connections': 'x' } },
    add({ driver: 'file', 'node-name': 'batch', filename: image, 'read-only': true, 'aio-max-batch': 5 }),
    { execute: 'blockdev-del', arguments: { 'node-name': 'batch' } },
    // qcow2's cache options, which QEMU reads through QemuOpts: a negative size, a negative interval.
    add({ driver: 'qcow2', 'node-name': 'q', file: { driver: 'file', filename: qcow2 }, 'read-only': true, 'l2-cache-size': -1 }),
    add({ driver: 'qcow2', 'node-name': 'q', file: { driver: 'file', filename: qcow2 }, 'read-only': true, 'cache-clean-interval': -1 }),
    { execute: 'query-named-block-nodes', arguments: { flat: true }, normalise: nodeSummary },
    { execute: 'query-named-block-nodes', arguments: { flat: 'yes' } },
    { execute: 'qmp_capabilities' },
    { execute: 'no-such-command' },
    { execute: 'query-version', arguments: { x: 1 } },
    { execute: 'quit', arguments: { now: true } },
  ];
}

async function converse(socket: string, steps: Step[]): Promise<unknown[]> {
  const client = await QmpClient.connect(socket, { negotiate: true });
  const replies: unknown[] = [];
  for (const step of steps) {
    const reply = await client.execute(step.execute, step.arguments);
    replies.push(step.normalise !== undefined && 'return' in reply ? step.normalise(reply) : reply);
  }
  await client.close();
  return replies;
}

test('blockdev-add, blockdev-del and query-named-block-nodes answer as qemu-storage-daemon does', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon') || !requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'blocklayer-parity-');
  const image = join(dir, 'disk.raw');
  execFileSync('qemu-img', ['create', '-f', 'raw', image, '16M']);
  const qcow2 = join(dir, 'disk.qcow2');
  execFileSync('qemu-img', ['create', '-f', 'qcow2', qcow2, '16M']);
  const args = ['--blockdev', `driver=file,node-name=f0,filename=${image}`, '--blockdev', '{"driver":"raw","node-name":"disk0","file":"f0"}'];
  // A Unix socket is no file to open: ENXIO.
  const listening = net.createServer();
  const socket = join(dir, 'listening.sock');
  await new Promise<void>((resolve) => listening.listen(socket, resolve));
  t.teardown(() => void listening.close());
  const steps = script(image, qcow2, socket);
  // Registered after tempDir's, so these run first: both daemons have exited before the image is removed.
  const qemu = await startDaemon('qemu', args);
  t.teardown(() => qemu.stop());
  const ours = await startDaemon('ours', args);
  t.teardown(() => ours.stop());
  const [expected, actual] = await Promise.all([converse(qemu.socket, steps), converse(ours.socket, steps)]);
  for (const [i, step] of steps.entries()) {
    t.deepEqual(actual[i], expected[i], `${step.execute} ${JSON.stringify(step.arguments ?? {})}`);
  }
});

test('--blockdev JSON that does not parse: the same message as qemu-storage-daemon, from the same lexer and parser as QMP', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon')) return;
  const texts = [
    '{"driver":"raw","file":{"driver","filename":"x"}}',
    '{"driver":"raw","file"r":"file"}}',
    '{"driver":"null-co","node-name":"n0"',
    '{"driver":"null-co","node-name":"n0"} x',
    '{"driver":"null-co","node-name":"n0","size":1.',
    '{"driver":"null-co","node-name":"n0","size":tru',
  ];
  const [command, argv] = blocklayerCommand(['daemon']);
  for (const text of texts) {
    const [theirs, ours] = await Promise.all([
      commandResult('qemu-storage-daemon', ['--blockdev', text]),
      commandResult(command, [...argv, '--blockdev', text]),
    ]);
    t.is(ours.code, theirs.code, text);
    t.is(ours.stderr.replace(/^blocklayer: /, ''), theirs.stderr.replace(/^qemu-storage-daemon: /, ''), text);
  }
});
