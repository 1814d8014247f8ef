/**
 * The copy offloading seam (core/block/copy-range.ts) over real drivers:
 * raw and qcow2 pass a copy down to their files, whose driver copies
 * between the two with copy_file_range; the destination sees a write
 * without a buffer through its hooks; what the source reads as zeroes is
 * zeroed; a driver that cannot take part refuses with ENOTSUP; and the
 * core's request checks hold on both ends.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { BlockNode } from '../../../core/block/block-node.js';
import { copyRange } from '../../../core/block/copy-range.js';
import type { WriteRequest } from '../../../core/block/request.js';
import type { ImageCreator } from '../../../core/block/image-creator.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';
import { loadFileNativeOps } from '../../../drivers/file/native/native.js';

const KiB = 1024;
const MiB = 1024 * KiB;

async function setUp(t: ExecutionContext) {
  const layer = await createTestLayer({ plugins: ['qcow2', 'file', 'raw', 'memory'] });
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-copy-range-'));
  t.teardown(async () => {
    await layer.close();
    await rm(dir, { recursive: true, force: true });
  });
  const creator = layer.container.get<ImageCreator>(TOKENS.ImageCreator);
  const path = (name: string) => join(dir, name);
  const open = (driver: string, name: string, extra: Record<string, unknown> = {}) =>
    layer.graph.add({ driver, 'node-name': name, file: { driver: 'file', 'node-name': `${name}-file`, filename: path(name) }, ...extra });
  const qcow2 = async (name: string, size: number, extra: Record<string, unknown> = {}) => {
    await creator.create('qcow2', { filename: path(name), size, ...extra });
    return open('qcow2', name);
  };
  return { layer, path, open, qcow2 };
}

async function contents(node: BlockNode, offset = 0, length = node.length): Promise<Buffer> {
  const buf = Buffer.alloc(length, 0x55);
  await node.read(offset, buf);
  return buf;
}

/** Notes the writes a node sees through its hooks. */
function writesTo(node: BlockNode): WriteRequest[] {
  const seen: WriteRequest[] = [];
  node.hooks.beforeWrite.tapPromise('test', async (request) => {
    seen.push(request);
    return undefined;
  });
  return seen;
}

const nativeOps = loadFileNativeOps().ops;

test('raw to qcow2: the files copy the bytes, the destination sees writes without buffers', async (t) => {
  if (nativeOps === undefined) return t.fail('the file driver needs its native addon for copy_file_range');
  const { layer, path, open, qcow2 } = await setUp(t);
  const data = randomBytes(4 * MiB);
  await writeFile(path('src.raw'), data);
  const source = await open('raw', 'src.raw');
  const target = await qcow2('dst.qcow2', 4 * MiB);
  const seenTop = writesTo(target);
  const seenFile = writesTo(layer.graph.node('dst.qcow2-file')!);
  await copyRange(source, 0, target, 0, 3 * MiB);
  // Part of a cluster, onto a cluster written before: the rest of that cluster stays.
  await target.write(3 * MiB, Buffer.alloc(64 * KiB, 7));
  await copyRange(source, 3 * MiB + 4 * KiB, target, 3 * MiB + 4 * KiB, 8 * KiB);
  const expected = Buffer.concat([data.subarray(0, 3 * MiB), Buffer.alloc(64 * KiB, 7), Buffer.alloc(MiB - 64 * KiB)]);
  data.copy(expected, 3 * MiB + 4 * KiB, 3 * MiB + 4 * KiB, 3 * MiB + 12 * KiB);
  t.true((await contents(target)).equals(expected));
  t.deepEqual(
    seenTop.map((r) => [r.kind, r.offset, r.bytes, r.buffer === undefined]),
    [
      ['write', 0, 3 * MiB, true],
      ['write', 3 * MiB, 64 * KiB, false],
      ['write', 3 * MiB + 4 * KiB, 8 * KiB, true],
    ],
  );
  // The data reached the file as copies (the last one into the cluster in place); metadata and the guest write with buffers.
  const copied = seenFile.filter((r) => r.kind === 'write' && r.buffer === undefined).reduce((sum, r) => sum + r.bytes, 0);
  t.is(copied, 3 * MiB + 8 * KiB);
});

test('qcow2 to raw: zero clusters are zeroed, unallocated ones come from the backing file', async (t) => {
  if (nativeOps === undefined) return t.fail('the file driver needs its native addon for copy_file_range');
  const { layer, path, open, qcow2 } = await setUp(t);
  const base = await qcow2('base.qcow2', 2 * MiB);
  await base.write(0, Buffer.alloc(2 * MiB, 1));
  await layer.graph.del('base.qcow2');
  const top = await qcow2('top.qcow2', 4 * MiB, { backing_file: path('base.qcow2'), backing_fmt: 'qcow2' });
  await top.write(MiB, Buffer.alloc(512 * KiB, 2));
  await top.writeZeroes(0, 256 * KiB);
  await top.write(3 * MiB, Buffer.alloc(64 * KiB, 3));
  await writeFile(path('out.raw'), Buffer.alloc(4 * MiB, 0xff));
  const out = await open('raw', 'out.raw');
  await copyRange(top, 0, out, 0, 4 * MiB);
  t.true((await contents(out)).equals(await contents(top)));
});

test('a driver without copy offloading refuses with ENOTSUP; the checks of both ends hold', async (t) => {
  const { layer, path, open, qcow2 } = await setUp(t);
  const refused = async (copy: Promise<void>, errno: string, message: string | RegExp) => {
    const error = await t.throwsAsync(copy, { message });
    t.is((error as { errno?: string } | undefined)?.errno, errno);
  };
  const memory = await layer.graph.add({ driver: 'memory', 'node-name': 'mem', size: MiB });
  const target = await qcow2('dst.qcow2', MiB);
  await target.write(0, Buffer.alloc(64 * KiB, 1));
  await refused(copyRange(memory, 0, target, 0, 64 * KiB), 'ENOTSUP', "Driver 'memory' of node 'mem' cannot offload copies");
  await refused(copyRange(target, 0, memory, 0, 64 * KiB), 'ENOTSUP', "Driver 'memory' of node 'mem' cannot offload copies");
  await refused(copyRange(target, MiB - 4 * KiB, memory, 0, 8 * KiB), 'EIO', /beyond the end of node 'dst.qcow2'/);
  await writeFile(path('ro.raw'), Buffer.alloc(MiB));
  const readOnly = await open('raw', 'ro.raw', { 'read-only': true });
  await refused(copyRange(target, 0, readOnly, 0, 4 * KiB), 'EACCES', "Block node 'ro.raw' is read-only");
  // A compressed cluster cannot be copied as it is stored.
  await target.write(128 * KiB, Buffer.alloc(64 * KiB, 9), { compressed: true });
  await writeFile(path('out.raw'), Buffer.alloc(MiB));
  const out = await open('raw', 'out.raw');
  await refused(copyRange(target, 128 * KiB, out, 0, 64 * KiB), 'ENOTSUP', /compressed/);
});
