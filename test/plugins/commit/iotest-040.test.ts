/**
 * qemu-iotests 040 (block-commit), re-tested here where the recordings
 * (transcripts.test.ts) do not already show it: relative backing file
 * names (TestRelativePaths), `top` naming the active layer by file name,
 * hot-unplug of the device during a commit (the job is cancelled), the
 * implicit commit filter invisible to the device, guest writes during an
 * active commit (the base ends up with what the device reads), the job
 * named after the device, and read-only bases and overlays reopened. Images are
 * made with qemu-img/qemu-io and checked with qemu-img.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { BlockLayerError } from '../../../core/errors.js';
import {
  type ChainSession,
  checkImage,
  compareImages,
  flatten,
  MiB,
  openChainSession,
  qemuImgInfo,
} from '../../helpers/chain-session.js';
import { withPeerSession } from '../../helpers/peers.js';

const withSession = (t: ExecutionContext, body: (s: ChainSession) => Promise<void>): Promise<void> =>
  withPeerSession(t, () => openChainSession(), body);

async function refused(t: ExecutionContext, s: ChainSession, args: Record<string, unknown>, message: string, errorClass: BlockLayerError['errorClass'] = 'GenericError'): Promise<void> {
  const error = await t.throwsAsync<BlockLayerError>(s.layer.execute('block-commit', args), undefined, JSON.stringify(args));
  t.is(error?.message, message, JSON.stringify(args));
  t.is(error?.errorClass, errorClass);
}

/** qemu-io on an image (-U, reading, while our layer may have it open); fails the test if the command fails. */
function qemuIo(path: string, command: string): void {
  execFileSync('qemu-io', [...(command.startsWith('read') ? ['-U', '-r'] : []), '-f', 'qcow2', '-c', command, path], { stdio: 'pipe' });
}

/** 040's TestRelativePaths: dir2/dir3/test.img → ../mid.img → ../dir1/backing.img, names relative as recorded. */
async function relativeChain(s: ChainSession): Promise<{ test: string; mid: string; backing: string }> {
  for (const dir of ['dir1', 'dir2/dir3']) mkdirSync(join(s.dir, dir), { recursive: true });
  const backing = join(s.dir, 'dir1', 'backing.img');
  const mid = join(s.dir, 'dir2', 'mid.img');
  const top = join(s.dir, 'dir2', 'dir3', 'test.img');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', backing, '1M']);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', backing, '-F', 'qcow2', mid]);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top]);
  execFileSync('qemu-img', ['rebase', '-u', '-b', '../dir1/backing.img', '-F', 'qcow2', mid]);
  execFileSync('qemu-img', ['rebase', '-u', '-b', '../mid.img', '-F', 'qcow2', top]);
  qemuIo(backing, 'write -P 0xab 0 524288');
  qemuIo(mid, 'write -P 0xef 524288 524288');
  // blocklayer cannot reopen a node read-write: the chain is opened writable, node by node, as its headers name it.
  const file = (filename: string) => ({ driver: 'file', filename });
  await s.layer.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'base', file: file(backing) });
  await s.layer.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'mid', file: file(mid), backing: 'base' });
  await s.layer.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: file(top), backing: 'mid' });
  s.layer.graph.attachBackend('drive0', 'top');
  return { test: top, mid, backing };
}

test('TestRelativePaths: top and base by their relative names as recorded; errors name them as given', (t) =>
  withSession(t, async (s) => {
    const paths = await relativeChain(s);
    await refused(t, s, { device: 'nonexistent', top: '../mid.img' }, "Device 'nonexistent' not found", 'DeviceNotFound');
    await refused(t, s, { device: 'drive0', top: '../mid.img', base: '../mid.img' }, "Can't find '../mid.img' in the backing chain");
    await refused(t, s, { device: 'drive0', top: 'badfile', base: '../dir1/backing.img' }, 'Top image file badfile not found');
    await refused(t, s, { device: 'drive0', top: '../mid.img', base: 'badfile' }, "Can't find 'badfile' in the backing chain");
    await refused(t, s, { device: 'drive0', top: '../dir1/backing.img', base: '../mid.img' }, "Can't find '../mid.img' in the backing chain");
    await s.layer.execute('block-commit', { device: 'drive0', top: '../mid.img', base: '../dir1/backing.img' });
    t.like(await s.log.wait('BLOCK_JOB_COMPLETED', 'drive0'), { type: 'commit', len: MiB, offset: MiB });
    t.false(s.log.of('drive0').includes('BLOCK_JOB_READY'), 'an intermediate commit has no READY');
    qemuIo(paths.backing, 'read -P 0xab 0 524288');
    qemuIo(paths.backing, 'read -P 0xef 524288 524288');
    t.like(qemuImgInfo(paths.test), { 'backing-filename': paths.backing, 'backing-filename-format': 'qcow2' });
    t.is(checkImage(paths.backing), '');
  }));

test('top naming the active layer by its file name: an active commit, READY, then complete', (t) =>
  withSession(t, async (s) => {
    await s.chain('');
    const expected = flatten(s.path('top'), join(s.dir, 'expected.raw'));
    s.layer.graph.attachBackend('drive0', 'top');
    await s.layer.execute('block-commit', { device: 'drive0', top: s.path('top'), base: s.path('base') });
    t.like(await s.log.wait('BLOCK_JOB_READY', 'drive0'), { type: 'commit' });
    await s.layer.execute('block-job-complete', { device: 'drive0' });
    t.like(await s.log.wait('BLOCK_JOB_COMPLETED', 'drive0'), { type: 'commit' });
    t.is(s.layer.graph.backend('drive0')!.node.nodeName, 'base', 'the device now uses the base');
    t.is(compareImages(s.path('base'), expected, 'qcow2', 'raw'), 'Images are identical.');
  }));

test('hot-unplug of the device during a commit cancels the job (BLOCK_JOB_CANCELLED); the chain stays', (t) =>
  withSession(t, async (s) => {
    await s.chain('');
    s.layer.graph.attachBackend('drive0', 'top');
    await s.layer.execute('block-commit', { device: 'drive0', top: s.path('mid'), base: s.path('base'), speed: 4 * MiB });
    s.layer.graph.detachBackend('drive0');
    t.like(await s.log.wait('BLOCK_JOB_CANCELLED', 'drive0'), { device: 'drive0', type: 'commit' });
    await s.log.status('drive0', 'null');
    t.deepEqual(await s.layer.execute('query-jobs', {}), []);
    t.is(s.layer.graph.node('top')!.children.get('backing')!.node.nodeName, 'mid');
    t.like(qemuImgInfo(s.path('top')), { 'backing-filename': s.path('mid') });
  }));

test('the implicit commit filter is invisible to the device: query-block shows top over mid over base', (t) =>
  withSession(t, async (s) => {
    await s.chain('');
    s.layer.graph.attachBackend('drive0', 'top');
    await s.layer.execute('block-commit', { device: 'drive0', 'top-node': 'mid', 'base-node': 'base', speed: 1 });
    t.is(s.layer.graph.backend('drive0')!.node.nodeName, 'top');
    // 040's test_implicit_node.
    const [drive] = (await s.layer.execute('query-block')) as Record<string, any>[];
    t.like(drive!.inserted, { file: s.path('top'), drv: 'qcow2', backing_file: s.path('mid'), backing_file_depth: 2 });
    t.is(drive!.inserted.image.filename, s.path('top'));
    t.is(drive!.inserted.image['backing-image'].filename, s.path('mid'));
    t.is(drive!.inserted.image['backing-image'].format, 'qcow2', 'not the commit_top filter');
    t.is(drive!.inserted.image['backing-image']['backing-image'].filename, s.path('base'));
    const nodes = (await s.layer.execute('query-named-block-nodes', { flat: true })) as Record<string, any>[];
    const top = nodes.find((n) => n['node-name'] === 'top')!;
    t.is(top.backing_file, s.path('mid'));
    t.true(nodes.some((n) => n.drv === 'commit_top' && /^#block\d+$/.test(n['node-name'])));
    // query-blockstats skips the filter the same way; per node it is listed, over mid.
    const [stats] = (await s.layer.execute('query-blockstats')) as Record<string, any>[];
    t.like(stats, { device: 'drive0', 'node-name': 'top', backing: { 'node-name': 'mid', backing: { 'node-name': 'base' } } });
    t.false('backing' in stats!.backing.backing);
    const filter = nodes.find((n) => n.drv === 'commit_top')!['node-name'];
    const perNode = (await s.layer.execute('query-blockstats', { 'query-nodes': true })) as Record<string, any>[];
    t.like(perNode.find((n) => n['node-name'] === filter), { parent: { 'node-name': 'mid' } });
    await s.layer.execute('block-job-cancel', { device: 'drive0' });
    await s.log.status('drive0', 'null');
    t.false(s.layer.graph.list().some((n) => n.driver.name === 'commit_top'), 'the filter left with the job');
  }));

test('guest writes during an active commit, before and after READY, all reach the base', (t) =>
  withSession(t, async (s) => {
    s.image('base', '32M', undefined, ['write -P 0x11 0 16M']);
    s.image('top', '32M', 'base', ['write -P 0x22 8M 16M']);
    await s.add('base');
    await s.add('top', 'base');
    const device = s.layer.graph.attachBackend('drive0', 'top');
    await s.layer.execute('block-commit', { device: 'drive0', speed: 8 * MiB });
    const write = (i: number) => device.write(((i * 7919) % 31) * MiB + (i % 5) * 4096 + 100, Buffer.alloc(65_000, 0x40 + (i % 40)));
    for (let i = 0; i < 40; i++) {
      await write(i);
      if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await s.layer.execute('block-job-set-speed', { device: 'drive0', speed: 0 });
    await s.log.wait('BLOCK_JOB_READY', 'drive0');
    for (let i = 40; i < 60; i++) await write(i);
    const expected = Buffer.alloc(32 * MiB);
    await device.read(0, expected);
    await s.layer.execute('block-job-complete', { device: 'drive0' });
    await s.log.status('drive0', 'null');
    t.is(device.node.nodeName, 'base');
    const reread = Buffer.alloc(32 * MiB);
    await device.read(0, reread);
    t.true(reread.equals(expected), 'the device reads the same from the base');
    s.layer.graph.detachBackend('drive0');
    const raw = join(s.dir, 'expected.raw');
    execFileSync('dd', ['of=' + raw, 'status=none'], { input: expected });
    t.is(compareImages(s.path('base'), raw, 'qcow2', 'raw'), 'Images are identical.');
    t.is(checkImage(s.path('base')), '');
  }));

test('the job id defaults to the device name; an intermediate commit rewrites the backing file of the image above', (t) =>
  withSession(t, async (s) => {
    await s.chain('');
    const expected = flatten(s.path('top'), join(s.dir, 'expected.raw'));
    s.layer.graph.attachBackend('drive0', 'top');
    await s.layer.execute('block-commit', { device: 'drive0', 'top-node': 'mid' });
    t.like(await s.log.wait('BLOCK_JOB_COMPLETED', 'drive0'), { device: 'drive0', len: 16 * MiB, offset: 16 * MiB });
    t.is(s.layer.graph.node('top')!.children.get('backing')!.node.nodeName, 'base');
    t.like(qemuImgInfo(s.path('top')), { 'backing-filename': s.path('base') });
    t.is(compareImages(s.path('top'), expected, 'qcow2', 'raw'), 'Images are identical.');
  }));

test('a read-only base, or image above top, is reopened read-write for the commit and back after; an explicitly read-only file is not (recorded with qemu-storage-daemon 7.2)', (t) =>
  withSession(t, async (s) => {
    s.chainImages('');
    await s.add('base', undefined, { 'read-only': true });
    await s.add('mid', 'base');
    await s.add('top', 'mid');
    await s.layer.execute('block-commit', { 'job-id': 'c', device: 'top', 'top-node': 'mid' });
    t.like(await s.log.wait('BLOCK_JOB_COMPLETED', 'c'), { type: 'commit' });
    t.true(s.layer.graph.node('base')!.readOnly, 'the base is read-only again');
    t.is(checkImage(s.path('base')), '');
    // The image above top records the base: reopened read-write for it, read-only again after.
    s.chainImages('o_');
    await s.add('o_base');
    await s.add('o_mid', 'o_base');
    await s.add('o_top', 'o_mid', { 'read-only': true });
    await s.layer.execute('block-commit', { 'job-id': 'c4', device: 'o_top', 'top-node': 'o_mid' });
    t.like(await s.log.wait('BLOCK_JOB_COMPLETED', 'c4'), { type: 'commit' });
    t.true(s.layer.graph.node('o_top')!.readOnly);
    t.like(qemuImgInfo(s.path('o_top')), { 'backing-filename': s.path('o_base') });
    // A file given read-only stays so on reopen: the qcow2 node above it cannot become writable.
    s.chainImages('p_');
    const file = (name: string) => ({ driver: 'file', filename: s.path(name), 'read-only': true });
    await s.layer.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'p_base', 'read-only': true, file: file('p_base') });
    await s.add('p_mid', 'p_base');
    await s.add('p_top', 'p_mid');
    await refused(t, s, { 'job-id': 'c2', device: 'p_top', 'top-node': 'p_mid' }, 'Block node is read-only');
    await refused(t, s, { 'job-id': 'c3', device: 'p_top' }, 'Block node is read-only');
    // QEMU 7.2 starts this one and fails it after the copy (its daemon then aborts): refused up front here.
    s.chainImages('q_');
    await s.add('q_base');
    await s.add('q_mid', 'q_base');
    await s.layer.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'q_top', 'read-only': true, file: file('q_top'), backing: 'q_mid' });
    await refused(t, s, { 'job-id': 'c5', device: 'q_top', 'top-node': 'q_mid' }, 'Block node is read-only');
    t.true(s.layer.graph.node('p_base')!.readOnly, 'a base reopened for a refused commit is read-only again');
    t.deepEqual(await s.layer.execute('query-jobs', {}), []);
    t.false(s.layer.graph.list().some((n) => n.driver.kind === 'filter'), 'no filter left behind');
  }));

