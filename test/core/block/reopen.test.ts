/**
 * Reopening nodes read-only and read-write (core/block/node-reopen.ts with
 * the file and qcow2 drivers' `reopen`): the file descriptor's access mode
 * really changes, qcow2's header ends as a read-write open and a clean
 * close leave it (checked with qemu-img), refusals and roll-back.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { BlockNode } from '../../../core/block/block-node.js';
import { setReadOnly } from '../../../core/block/node-reopen.js';
import type { BlockIoError } from '../../../core/errors.js';
import { createTestLayer } from '../../../core/testing/index.js';
import type { FileState } from '../../../drivers/file/driver.js';
import type { Qcow2Image } from '../../../drivers/qcow2/qcow2-image.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

async function setUp(t: ExecutionContext) {
  const dir = await tempDir(t, 'blocklayer-reopen-');
  const layer = await createTestLayer({ plugins: ['file', 'raw', 'qcow2'] });
  t.teardown(() => layer.close());
  return { dir, layer, add: (options: Record<string, unknown>) => layer.graph.add(options) };
}

/** The access mode of the node's descriptor as the kernel has it (O_ACCMODE of /proc/self/fdinfo). */
function accessMode(node: BlockNode): 'ro' | 'rw' {
  const fd = (node.driverState as FileState).handle.fd;
  const flags = Number.parseInt(/flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!, 8);
  return (flags & 3) === 0 ? 'ro' : 'rw';
}

function qemuImgInfo(path: string): Record<string, unknown> {
  return JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path], { encoding: 'utf8' })) as Record<string, unknown>;
}

function setHeaderBit(path: string, bit: number): void {
  const image = readFileSync(path);
  image[79] = image[79]! | (1 << bit);
  writeFileSync(path, image);
}

test('a file node reopened read-only gets a read-only descriptor: writes fail and the file is unchanged; back read-write, they work', async (t) => {
  const { dir, add } = await setUp(t);
  const path = join(dir, 'disk.raw');
  writeFileSync(path, Buffer.alloc(65536, 0x11));
  const node = await add({ driver: 'file', 'node-name': 'f', filename: path });
  t.is(accessMode(node), 'rw');
  await setReadOnly(node, true);
  t.true(node.readOnly);
  t.is(accessMode(node), 'ro');
  const error = await t.throwsAsync<BlockIoError>(node.write(0, Buffer.alloc(512, 0x22)));
  t.is(error?.errno, 'EACCES');
  // Past the seam, the kernel refuses too: the descriptor itself is read-only.
  await t.throwsAsync(node.driver.write!(node.driverState, 0, Buffer.alloc(512, 0x22), {}), { code: 'EBADF' });
  t.deepEqual(readFileSync(path), Buffer.alloc(65536, 0x11));
  await setReadOnly(node, false);
  t.is(accessMode(node), 'rw');
  await node.write(0, Buffer.alloc(512, 0x22));
  await node.flush();
  t.deepEqual(readFileSync(path).subarray(0, 512), Buffer.alloc(512, 0x22));
});

test('a node the user added read-only may be reopened read-write (QEMU 7.2 reopen ignores allow-rdwr); its file follows', async (t) => {
  const { dir, add } = await setUp(t);
  const path = join(dir, 'disk.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '1M']);
  const node = await add({ driver: 'qcow2', 'node-name': 'q', 'read-only': true, file: { driver: 'file', filename: path } });
  const file = node.children.get('file')!.node;
  t.is(accessMode(file), 'ro');
  await setReadOnly(node, false);
  t.false(node.readOnly);
  t.false(file.readOnly);
  t.is(accessMode(file), 'rw');
  t.true((node.driverState as Qcow2Image).writable);
});

test('qcow2 with lazy refcounts: dirty while written after reopening read-write, clean and consistent after reopening read-only', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const { dir, add } = await setUp(t);
  const path = join(dir, 'lazy.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', path, '4M']);
  const node = await add({ driver: 'qcow2', 'node-name': 'q', 'read-only': true, file: { driver: 'file', filename: path } });
  await setReadOnly(node, false);
  await node.write(65536, Buffer.alloc(131072, 0x5a));
  t.is(qemuImgInfo(path)['dirty-flag'], true, 'lazy refcounts set the dirty bit before the first metadata change');
  await setReadOnly(node, true);
  t.is(qemuImgInfo(path)['dirty-flag'], false, 'reopening read-only clears it (qcow2_mark_clean)');
  t.notThrows(() => execFileSync('qemu-img', ['check', '-U', '-f', 'qcow2', path]));
  t.notThrows(() => execFileSync('qemu-io', ['-U', '-r', '-f', 'qcow2', '-c', 'read -P 0x5a 64k 128k', path]));
  const error = await t.throwsAsync<BlockIoError>(node.write(0, Buffer.alloc(512)));
  t.is(error?.errno, 'EACCES');
  t.is(accessMode(node.children.get('file')!.node), 'ro');
  const size = readFileSync(path).length;
  t.is(size % 65536, 0, 'the file is cut to what the image uses (no grow-ahead slack left)');
});

test('a dirty image opened read-only is repaired and marked clean when reopened read-write, as a read-write open does', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const { dir, add } = await setUp(t);
  const path = join(dir, 'dirty.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', path, '1M']);
  setHeaderBit(path, 0);
  const node = await add({ driver: 'qcow2', 'node-name': 'q', 'read-only': true, file: { driver: 'file', filename: path } });
  t.is(qemuImgInfo(path)['dirty-flag'], true);
  await setReadOnly(node, false);
  t.is(qemuImgInfo(path)['dirty-flag'], false);
});

test('a corrupt image is refused read-write with the open\'s message; its file, reopened first, goes back read-only', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const { dir, add } = await setUp(t);
  const path = join(dir, 'corrupt.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '1M']);
  setHeaderBit(path, 1);
  const node = await add({ driver: 'qcow2', 'node-name': 'q', 'read-only': true, file: { driver: 'file', filename: path } });
  const file = node.children.get('file')!.node;
  await t.throwsAsync(setReadOnly(node, false), { message: 'qcow2: Image is corrupt; cannot be opened read/write' });
  t.true(node.readOnly);
  t.true(file.readOnly);
  t.is(accessMode(file), 'ro');
});

test('a file that cannot be opened in the new mode keeps its descriptor and mode', async (t) => {
  const { dir, add } = await setUp(t);
  const path = join(dir, 'gone.raw');
  writeFileSync(path, Buffer.alloc(4096, 0x11));
  const node = await add({ driver: 'raw', 'node-name': 'r', 'read-only': true, file: { driver: 'file', filename: path } });
  unlinkSync(path);
  await t.throwsAsync(setReadOnly(node, false), { message: `Could not open '${path}': No such file or directory` });
  t.true(node.readOnly);
  const buf = Buffer.alloc(4096);
  await node.read(0, buf);
  t.deepEqual(buf, Buffer.alloc(4096, 0x11), 'the old descriptor still reads');
});

test('refusals: a file given read-only under a format node, a file a writable qcow2 node writes to; raw passes its users on', async (t) => {
  const { dir, add } = await setUp(t);
  const path = join(dir, 'a.raw');
  writeFileSync(path, Buffer.alloc(1 << 20));
  const qcow2Path = join(dir, 'b.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2Path, '1M']);
  const explicit = await add({ driver: 'qcow2', 'node-name': 'q', 'read-only': true, file: { driver: 'file', filename: qcow2Path, 'read-only': true } });
  await t.throwsAsync(setReadOnly(explicit, false), { message: 'Block node is read-only' });
  t.true(explicit.readOnly);
  await t.notThrowsAsync(setReadOnly(explicit.children.get('file')!.node, false), 'the file itself may be reopened');
  await t.notThrowsAsync(setReadOnly(explicit, false));
  const file = explicit.children.get('file')!.node;
  await t.throwsAsync(setReadOnly(file, true), { message: `Read-only block node '${file.nodeName}' cannot support read-write users` });
  t.false(file.readOnly);
  // raw over a named file with nobody writing through it: allowed (recorded with qemu-storage-daemon 7.2's blockdev-reopen).
  const named = await add({ driver: 'file', 'node-name': 'f', filename: path });
  await add({ driver: 'raw', 'node-name': 'r', file: 'f' });
  await t.notThrowsAsync(setReadOnly(named, true));
});
