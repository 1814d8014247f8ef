/**
 * Persistent dirty bitmaps in qcow2 images (drivers/qcow2/qcow2-bitmaps.ts
 * and the core's BitmapStore), with QEMU as the oracle: bitmaps made by
 * qemu-img and qemu-io load with what QEMU recorded; what we record and
 * store, qemu-nbd serves as `qemu:dirty-bitmap:NAME` (read with nbdinfo);
 * `qemu-img info` lists the directory we write, and `qemu-img check`
 * finds no leak after a store, a replacement or a removal.
 */
import { readFile, writeFile } from 'node:fs/promises';
import test, { type ExecutionContext } from 'ava';
import type { BitmapStore } from '../../../core/bitmap/bitmap-store.js';
import type { BlockNode } from '../../../core/block/block-node.js';
import { TOKENS } from '../../../core/tokens.js';
import { requirePeer } from '../../helpers/peers.js';
import { qemuDirtyRanges, qemuImageBitmaps } from '../../helpers/qemu-bitmaps.js';
import { checkImage, type ImageCheckReport } from '../../../core/image-tools/check.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { CrashDisk, crashDiskPlugin, crashDisks } from './crash-disk.js';
import { imageOf, KiB, MiB, pseudoRandom, type Qcow2Fixture, qcow2Fixture, requireQemu, run, runStatus } from './fixture.js';

function havePeers(t: ExecutionContext): boolean {
  return requireQemu(t) && requirePeer(t, 'qemu-nbd') && requirePeer(t, 'nbdinfo');
}

async function ourBitmaps(node: BlockNode): Promise<unknown> {
  const description = await node.driver.describe!(node.driverState);
  return (description.formatSpecific!.data as { bitmaps?: unknown }).bitmaps;
}

/** qemu-img check and ours find nothing, and count the same clusters (the bitmaps' among them). */
async function checkClean(t: ExecutionContext, f: Qcow2Fixture, image: string): Promise<void> {
  const { code, stdout, stderr } = await runStatus('qemu-img', ['check', '--output=json', '-f', 'qcow2', image]);
  t.is(code, 0, `qemu-img check: ${stdout}${stderr}`);
  const qemu = JSON.parse(stdout) as ImageCheckReport;
  t.is(qemu.leaks ?? 0, 0);
  t.is(qemu.corruptions ?? 0, 0);
  const node = await f.layer.graph.open({ driver: 'qcow2', file: { driver: 'file', filename: image }, 'read-only': true }, { readOnly: true, check: true });
  try {
    const ours = await checkImage(node, image, 'none');
    t.is(ours.exitCode, 0, ours.messages.join('\n'));
    t.is(ours.report['allocated-clusters'], qemu['allocated-clusters']);
  } finally {
    await f.layer.graph.closeIfUnused(node);
  }
}

test('bitmaps qemu-img made load with what qemu-io recorded; our writes are recorded and stored at close, as qemu-nbd reads them', async (t) => {
  if (!havePeers(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('a.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
  await run('qemu-img', ['bitmap', '--add', image, 'b0']);
  await run('qemu-img', ['bitmap', '--add', '-g', '4096', '--disable', image, 'b1']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 64k', image]);
  const node = await f.open(image);
  t.deepEqual(
    f.layer.container.get<BitmapStore>(TOKENS.BitmapStore).info(node),
    [
      { name: 'b1', count: 0, granularity: 4096, recording: false, busy: false, persistent: true },
      { name: 'b0', count: 64 * KiB, granularity: 64 * KiB, recording: true, busy: false, persistent: true },
    ],
    'listed as QEMU lists them: the last stored first',
  );
  t.deepEqual(await qemuImageBitmaps(image), [
    { flags: ['in-use', 'auto'], name: 'b0', granularity: 64 * KiB },
    { flags: ['in-use'], name: 'b1', granularity: 4096 },
  ], 'marked in use while the image is open for writing');
  await node.write(4 * MiB, Buffer.alloc(4 * KiB, 2));
  await node.write(10 * MiB + 100, Buffer.alloc(10, 3));
  await f.close();
  t.deepEqual(await qemuImageBitmaps(image), [
    { flags: ['auto'], name: 'b0', granularity: 64 * KiB },
    { flags: [], name: 'b1', granularity: 4096 },
  ]);
  await checkClean(t, f, image);
  t.deepEqual(await qemuDirtyRanges(image, 'b0'), [
    { offset: 0, length: 64 * KiB },
    { offset: 4 * MiB, length: 64 * KiB },
    { offset: 10 * MiB, length: 64 * KiB },
  ]);
  t.deepEqual(await qemuDirtyRanges(image, 'b1'), [], 'a disabled bitmap records nothing');
  const reopened = await f.open(image, { 'read-only': true });
  t.deepEqual(await ourBitmaps(reopened), await qemuImageBitmaps(image), "our info's bitmaps are qemu-img info's");
});

test('new persistent bitmaps are stored at close, a removed one leaves the image (at once when removed from the store), and no cluster leaks', async (t) => {
  if (!havePeers(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('b.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '8M']);
  await run('qemu-img', ['bitmap', '--add', image, 'old']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 1M 64k', image]);
  const layer = f.layer;
  await f.open(image);
  const store = layer.container.get<BitmapStore>(TOKENS.BitmapStore);
  const node = layer.graph.node('q')!;
  store.create(node, 'p', { granularity: 512, persistent: true });
  store.create(node, 'off', { persistent: true, enabled: false });
  await node.write(2 * MiB + 1000, Buffer.alloc(100, 4));
  store.release(store.find(node, 'old')!);
  await f.close();
  // QEMU appends new bitmaps in its list's order (newest first).
  t.deepEqual(await qemuImageBitmaps(image), [
    { flags: [], name: 'off', granularity: 64 * KiB },
    { flags: ['auto'], name: 'p', granularity: 512 },
  ]);
  t.deepEqual(await qemuDirtyRanges(image, 'p'), [{ offset: 2 * MiB + 512, length: 1024 }]);
  await checkClean(t, f, image);

  await f.open(image);
  const p = store.find(layer.graph.node('q')!, 'p')!;
  await store.removeStored(p);
  t.deepEqual(await qemuImageBitmaps(image), [{ flags: ['in-use'], name: 'off', granularity: 64 * KiB }], 'a removal leaves the image at once');
  store.release(p);
  store.release(store.find(layer.graph.node('q')!, 'off')!);
  await f.close();
  t.is(await qemuImageBitmaps(image), undefined, 'the last one removed: no bitmaps extension');
  t.is((await readFile(image)).readBigUInt64BE(88) & 1n, 0n, 'and autoclear bit 0 cleared');
  await checkClean(t, f, image);
});

test('an image that was not closed keeps its bitmaps in use: they load inconsistent, usable only to be removed', async (t) => {
  if (!havePeers(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('c.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '4M']);
  await run('qemu-img', ['bitmap', '--add', image, 'b0']);
  await run('qemu-img', ['bitmap', '--add', image, 'b1']);
  const node = await f.open(image);
  await node.write(0, Buffer.alloc(512, 1));
  // What a crash leaves: the directory as it was marked when the image was opened.
  const crashed = Buffer.from(await readFile(image));
  await f.close();
  await writeFile(image, crashed);
  t.deepEqual(await qemuImageBitmaps(image), [
    { flags: ['in-use', 'auto'], name: 'b0', granularity: 64 * KiB },
    { flags: ['in-use', 'auto'], name: 'b1', granularity: 64 * KiB },
  ]);
  const server = await runStatus('qemu-nbd', ['-r', '-f', 'qcow2', '-B', 'b0', '-k', f.path('x.sock'), image]);
  t.regex(server.stderr, /Bitmap 'b0' is inconsistent and cannot be used/, 'QEMU refuses them too');

  const reopened = await f.open(image);
  const store = f.layer.container.get<BitmapStore>(TOKENS.BitmapStore);
  t.deepEqual(store.info(reopened), [
    { name: 'b1', count: 0, granularity: 64 * KiB, recording: false, busy: false, persistent: true, inconsistent: true },
    { name: 'b0', count: 0, granularity: 64 * KiB, recording: false, busy: false, persistent: true, inconsistent: true },
  ], 'not recording either, as in QEMU');
  t.throws(() => store.find(reopened, 'b0')!.check(), { message: "Bitmap 'b0' is inconsistent and cannot be used" });
  store.release(store.find(reopened, 'b0')!);
  await reopened.write(MiB, Buffer.alloc(512, 2));
  await f.close();
  t.deepEqual(await qemuImageBitmaps(image), [{ flags: ['in-use', 'auto'], name: 'b1', granularity: 64 * KiB }], 'the other stays inconsistent');
  await checkClean(t, f, image);
  const before = await readFile(image);
  await (await f.open(image)).write(2 * MiB, Buffer.alloc(512, 3));
  const directory = imageOf(f.layer.graph.node('q')!).bitmapDirectory;
  await f.close();
  t.deepEqual(imageOf(await f.open(image, { 'read-only': true })).bitmapDirectory, directory, 'only an inconsistent bitmap: its directory is not rewritten');
  await f.close();
  t.true((await readFile(image)).subarray(0, 512).equals(before.subarray(0, 512)), 'nor the header');
});

test('a write after the bitmaps were stored, with nothing marking them in use again, drops them rather than leave them stale', async (t) => {
  if (!havePeers(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('stale.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '4M']);
  await run('qemu-img', ['bitmap', '--add', image, 'b0']);
  const node = await f.open(image);
  await node.write(0, Buffer.alloc(512, 1));
  const stored = f.layer.container.get<BitmapStore>(TOKENS.BitmapStore).find(node, 'b0')!;
  await node.driver.storeBitmaps!(node.driverState, [{ name: 'b0', granularity: stored.granularity, enabled: true, inconsistent: false, bits: stored.toBytes() }]);
  t.deepEqual(await qemuImageBitmaps(image), [{ flags: ['auto'], name: 'b0', granularity: 64 * KiB }], 'stored, not in use');
  // As a node reopened read-write would write if it could not mark them in use.
  await node.write(MiB, Buffer.alloc(512, 2));
  t.is((await readFile(image)).readBigUInt64BE(88) & 1n, 0n, 'the bitmaps bit cleared: QEMU ignores them from now on');
  t.is(await qemuImageBitmaps(image), undefined);
});

test('on a read-only node bitmaps are read-only, and the image is left as it was', async (t) => {
  if (!havePeers(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('d.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '4M']);
  await run('qemu-img', ['bitmap', '--add', '-g', '8192', image, 'b0']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 8k 16k', image]);
  const before = await readFile(image);
  const node = await f.open(image, { 'read-only': true });
  const store = f.layer.container.get<BitmapStore>(TOKENS.BitmapStore);
  const bitmap = store.find(node, 'b0')!;
  t.is(bitmap.count, 16 * KiB);
  t.deepEqual([...bitmap.dirtyAreas(0, node.length)], [{ offset: 8 * KiB, length: 16 * KiB }]);
  t.throws(() => bitmap.check({ readonly: true }), { message: "Bitmap 'b0' is readonly and cannot be modified" });
  t.notThrows(() => bitmap.check(), 'usable where it is only read (an export, a backup)');
  store.release(bitmap);
  await f.close();
  t.true((await readFile(image)).equals(before));
});

test('a broken bitmap directory is refused at open (as QEMU refuses it), naming the bitmap, and nothing is written', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('e.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '4M']);
  await run('qemu-img', ['bitmap', '--add', image, 'b0']);
  const node = await f.open(image, { 'read-only': true });
  const directory = imageOf(node).bitmapDirectory!.offset;
  await f.close();
  const bytes = await readFile(image);
  bytes[directory + 16] = 7;
  await writeFile(image, bytes);
  await t.throwsAsync(f.open(image, { 'read-only': true }), { message: /bitmap directory of '.*e\.qcow2' is broken: bitmap 'b0' is of unknown type 7/ });
  await t.throwsAsync(f.open(image), { message: /bitmap 'b0' is of unknown type 7/ });
  const qemu = await runStatus('qemu-img', ['info', '-f', 'qcow2', image]);
  t.regex(qemu.stderr, /Bitmap 'b0' doesn't satisfy the constraints/);
  t.deepEqual(await readFile(image), bytes, 'a refused open writes nothing');
});

test('hostile bitmap entries are refused at open, each with its own error naming the bitmap, and nothing is written', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('h.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '4M']);
  await run('qemu-img', ['bitmap', '--add', '-g', '512', image, 'b0']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write 0 4k', image]);
  const node = await f.open(image, { 'read-only': true });
  const directory = imageOf(node).bitmapDirectory!.offset;
  await f.close();
  const clean = await readFile(image);
  const table = Number(clean.readBigUInt64BE(directory));
  const cases: [what: string, damage: (bytes: Buffer) => void, message: RegExp][] = [
    ['a table of 2^27 entries', (b) => b.writeUInt32BE(0x8000000, directory + 8), /bitmap 'b0' of '.*' does not match the image size/],
    ['a table of 2^32-1 entries', (b) => b.writeUInt32BE(0xffffffff, directory + 8), /bitmap 'b0' has a table of 4294967295 entries/],
    ['granularity bits 40', (b) => (b[directory + 17] = 40), /bitmap 'b0' has granularity bits 40/],
    ['unknown flags', (b) => b.writeUInt32BE(0x10, directory + 12), /bitmap 'b0' has unknown flags 0x10/],
    ['a name running past the directory', (b) => b.writeUInt16BE(1000, directory + 18), /entry 0 runs past the directory/],
    ['a data cluster past the end of the file', (b) => b.writeBigUInt64BE(1n << 40n, table), /bitmap 'b0' of '.*' points past the end of the file/],
    ['a data cluster not aligned', (b) => b.writeBigUInt64BE(BigInt(table + 512), table), /bitmap 'b0' of '.*' has a broken table entry 0/],
  ];
  for (const [what, damage, message] of cases) {
    const bytes = Buffer.from(clean);
    damage(bytes);
    await writeFile(image, bytes);
    await t.throwsAsync(f.open(image, { 'read-only': true }), { message }, what);
    t.deepEqual(await readFile(image), bytes, `${what}: nothing written`);
  }
});

test('a power loss while bitmaps are stored leaves leaks at worst, and each bitmap in use or stored whole', async (t) => {
  if (!havePeers(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('crash.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', image, '8M']);
  await run('qemu-img', ['bitmap', '--add', '-g', '4096', image, 'b0']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 8k', image]);
  const layer = await createTestLayer({ plugins: ['qcow2', crashDiskPlugin] });
  t.teardown(() => layer.close());
  const disk = new CrashDisk(await readFile(image));
  crashDisks.set('bitmaps', disk);
  t.teardown(() => crashDisks.delete('bitmaps'));
  const node = await layer.graph.add({ driver: 'qcow2', 'node-name': 'q', file: { driver: 'crash-disk', disk: 'bitmaps' } });
  const store = layer.container.get<BitmapStore>(TOKENS.BitmapStore);
  store.create(node, 'p', { granularity: 512, persistent: true });
  for (let at = 0; at < 8 * MiB; at += MiB) await node.write(at + 4096, Buffer.alloc(512, 2));
  await node.flush();
  const expected = {
    b0: [{ offset: 0, length: 8 * KiB }, ...Array.from({ length: 7 }, (_, i) => ({ offset: (i + 1) * MiB + 4096, length: 4096 }))],
    p: Array.from({ length: 8 }, (_, i) => ({ offset: i * MiB + 4096, length: 512 })),
  };
  const seen = new Set<string>();
  let moments = 0;
  let seed = 7;
  disk.moment = async () => {
    if (disk.pendingCount === 0) return;
    moments++;
    const keep = pseudoRandom(4096, seed++);
    const file = f.path(`survivor.qcow2`);
    await writeFile(file, disk.survivor((i) => (keep[i % keep.length]! & 1) === 1));
    const check = await runStatus('qemu-img', ['check', '-f', 'qcow2', file]);
    t.true(check.code === 0 || check.code === 3, `moment ${moments}: qemu-img check exit ${check.code}: ${check.stdout}`);
    const listed = (await qemuImageBitmaps(file)) as { name: string; flags: string[] }[];
    seen.add(JSON.stringify(listed));
    for (const bitmap of listed) {
      if (bitmap.flags.includes('in-use')) continue;
      t.deepEqual(await qemuDirtyRanges(file, bitmap.name), expected[bitmap.name as 'b0' | 'p'], `moment ${moments}: ${bitmap.name} stored whole`);
    }
  };
  await layer.graph.del('q');
  disk.moment = undefined;
  t.true(moments > 3, `${moments} moments`);
  t.deepEqual(
    [...seen].map((s) => JSON.parse(s) as unknown),
    [
      [{ flags: ['in-use', 'auto'], name: 'b0', granularity: 4096 }],
      [
        { flags: ['auto'], name: 'b0', granularity: 4096 },
        { flags: ['auto'], name: 'p', granularity: 512 },
      ],
    ],
    'before the header switch the bitmap in use, after it both stored',
  );
});
