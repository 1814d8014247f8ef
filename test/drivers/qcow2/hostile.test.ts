/**
 * Hostile and unsupported images (reference §7.2, §9): patched copies of
 * good images are refused on open with their own clear error (QEMU's where
 * QEMU has one) and without allocations proportional to the bad field;
 * inconsistent tables found at run time fail the request and, on a
 * writable image, set the corrupt bit.
 */
import { copyFile, open, readFile, writeFile } from 'node:fs/promises';
import test, { type ExecutionContext } from 'ava';
import { BlockIoError } from '../../../core/errors.js';
import { assertClean, KiB, MiB, qcow2Fixture, qemuCheck, type Qcow2Fixture, readNode, requireQemu, run, sameBytes } from './fixture.js';

/** Patches big-endian fields of a copy of `good` and returns its path. */
async function patched(f: Qcow2Fixture, good: string, name: string, patches: [offset: number, bytes: Buffer][]): Promise<string> {
  const path = f.path(name);
  await copyFile(good, path);
  const handle = await open(path, 'r+');
  for (const [offset, bytes] of patches) await handle.write(bytes, 0, bytes.length, offset);
  await handle.close();
  return path;
}

const u32 = (v: number) => Buffer.from([v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255]);
const u64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
};

/** Where the L2 entry of `guest` lies in `image` (64k clusters, its L2 table allocated). */
function l2EntryAt(image: Buffer, guest: number): number {
  const l1 = Number(image.readBigUInt64BE(40));
  const l2 = Number(image.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  return l2 + Math.floor(guest / 65536) * 8;
}

async function goodImage(t: ExecutionContext, f: Qcow2Fixture): Promise<string> {
  const path = f.path('good.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', path, '64M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 128k', '-c', 'write -c -P 0x22 1M 64k', path]);
  t.pass();
  return path;
}

const headerCases: [title: string, patches: [number, Buffer][], message: string | RegExp][] = [
  ['bad magic', [[0, u32(0x51464900)]], 'Image is not in qcow2 format'],
  ['version 1', [[4, u32(1)]], 'Unsupported qcow2 version 1'],
  ['version 4', [[4, u32(4)]], 'Unsupported qcow2 version 4'],
  ['cluster_bits 8', [[20, u32(8)]], 'Unsupported cluster size: 2^8'],
  ['cluster_bits 22', [[20, u32(22)]], 'Unsupported cluster size: 2^22'],
  ['header_length 96', [[100, u32(96)]], 'qcow2 header too short'],
  ['header_length past the cluster', [[100, u32(65544)]], 'qcow2 header exceeds cluster size'],
  ['backing_file_offset past cluster 0', [[8, u64(65537n)]], 'Invalid backing file offset'],
  ['compression type 2', [[104, Buffer.from([2])]], 'qcow2: unknown compression type: 2'],
  ['compression bit without zstd', [[72, u64(8n)]], 'qcow2: Compression type incompatible feature bit must not be set'],
  ['zstd without the compression bit', [[104, Buffer.from([1])]], 'qcow2: Compression type incompatible feature bit must be set'],
  ['unknown incompatible bit 5', [[72, u64(32n)]], 'Unsupported qcow2 feature(s): Unknown incompatible feature: 20'],
  ['refcount_order 7', [[96, u32(7)]], 'Reference count entry width too large; may not exceed 64 bits'],
  ['no refcount table', [[56, u32(0)]], 'Image does not contain a reference count table'],
  ['refcount table of 0x81 clusters', [[56, u32(0x81)]], 'Reference count table too large'],
  ['unaligned refcount table', [[48, u64(0x10200n)]], 'Reference count table offset invalid'],
  ['65537 snapshots', [[60, u32(65537)]], 'Snapshot table too large'],
  ['unaligned snapshot table', [[60, u32(1)], [64, u64(0x10200n)]], 'Snapshot table offset invalid'],
  ['L1 table of 0x400001 entries', [[36, u32(0x400001)]], 'Active L1 table too large'],
  ['L1 table too small', [[36, u32(0)]], 'L1 table is too small'],
  ['unaligned L1 table', [[40, u64(0x30100n)]], 'Active L1 table offset invalid'],
  ['L1 table offset overflowing', [[40, u64(0x7ffffffffffff000n)]], 'Active L1 table offset invalid'],
  ['size 2^63-1', [[24, u64(2n ** 63n - 1n)]], 'Image is too big'],
  ['encryption method 3', [[32, u32(3)]], 'Unsupported encryption method 3'],
  ['AES encryption', [[32, u32(1)]], 'qcow2: AES-CBC encrypted images are not supported'],
  ['LUKS encryption', [[32, u32(2)]], 'qcow2: LUKS encrypted images are not supported'],
  ['an extension running past the cluster', [[0x70, u32(0x1234)], [0x74, u32(0x10000)]], 'Header extension too large'],
  ['a backing format of 16 bytes', [[0x70, u32(0xe2792aca)], [0x74, u32(16)]], 'ERROR: ext_backing_format: len=16 too large (>=16)'],
  ['a backing name of 1024 bytes', [[8, u64(0x200n)], [16, u32(1024)]], 'Backing file name too long'],
  ['an external data file', [[72, u64(4n)]], /has an external data file, which is not supported/],
  ['extended L2 entries', [[72, u64(16n)]], /uses extended L2 entries \(subclusters\), which are not supported/],
  ['the raw-external-data autoclear bit alone', [[88, u64(2n)]], 'data-file-raw requires a data file'],
];

test('patched headers are refused with their own message, read-only or not', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const good = await goodImage(t, f);
  for (const [i, [title, patches, message]] of headerCases.entries()) {
    const path = await patched(f, good, `h${i}.qcow2`, patches);
    const before = process.memoryUsage().arrayBuffers;
    await t.throwsAsync(f.open(path, { 'read-only': true }), { message }, title);
    t.true(process.memoryUsage().arrayBuffers - before < 64 * MiB, `${title}: no big allocation`);
  }
  t.deepEqual(f.layer.graph.list(), []);
});

test('a snapshot entry with too much extra data is refused', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const good = await goodImage(t, f);
  await run('qemu-img', ['snapshot', '-c', 's', good]);
  const table = Number((await readFile(good)).readBigUInt64BE(64));
  const path = await patched(f, good, 'snap.qcow2', [[table + 36, u32(1025)]]);
  await t.throwsAsync(f.open(path, { 'read-only': true }), { message: 'Too much extra metadata in snapshot table entry 0' });
});

test('data-file and extended-L2 images made by qemu-img are refused clearly', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${f.path('df.data')},data_file_raw=on`, f.path('df.qcow2'), '4M']);
  await t.throwsAsync(f.open(f.path('df.qcow2'), { 'read-only': true }), { message: /has an external data file/ });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', f.path('el2.qcow2'), '16M']);
  await t.throwsAsync(f.open(f.path('el2.qcow2'), { 'read-only': true }), { message: /extended L2 entries/ });
});

test('the corrupt bit: read-only opens work, read-write is refused with QEMU message', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const good = await goodImage(t, f);
  const path = await patched(f, good, 'corrupt.qcow2', [[72, u64(2n)]]);
  await t.throwsAsync(f.open(path), { message: 'qcow2: Image is corrupt; cannot be opened read/write' });
  const node = await f.open(path, { 'read-only': true });
  sameBytes(t, await readNode(node, 0, 128 * KiB), Buffer.alloc(128 * KiB, 0x11));
  t.like((await node.driver.describe!(node.driverState)).formatSpecific?.data, { corrupt: true });
});

test('a dirty image (lazy refcounts, crashed) reads fine read-only and is repaired when opened read-write, as QEMU', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('lazy.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', path, '16M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x44 0 256k', '-c', 'abort', path]).catch(() => undefined);
  t.is((await qemuCheck(path)).code, 2, 'qemu-img check sees the unwritten refcounts as corruptions');
  const node = await f.open(path, { 'read-only': true });
  sameBytes(t, await readNode(node, 0, 256 * KiB), Buffer.alloc(256 * KiB, 0x44));
  t.true((await node.driver.describe!(node.driverState)).dirtyFlag);
  await f.close();
  const writable = await f.open(path);
  t.false((await writable.driver.describe!(writable.driverState)).dirtyFlag);
  sameBytes(t, await readNode(writable, 0, 256 * KiB), Buffer.alloc(256 * KiB, 0x44));
  await f.close();
  await assertClean(t, path);
});

test('bad L2 entries fail reads; on a writable image they set the corrupt bit', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const good = await goodImage(t, f);
  const bytes = await readFile(good);
  const at = l2EntryAt(bytes, 0);
  const entry = bytes.readBigUInt64BE(at);
  const cases: [string, bigint, RegExp][] = [
    ['unaligned', entry + 0x200n, /Cluster allocation offset 0x[0-9a-f]+ unaligned \(L2 offset: 0x[0-9a-f]+, L2 index: 0x0\)/],
    ['reserved bits', entry | 2n, /L2 entry with reserved bits set/],
    ['compressed with COPIED', (1n << 63n) | (1n << 62n) | 0x50000n, /Compressed cluster entry with COPIED flag set/],
  ];
  for (const [title, value, message] of cases) {
    const path = await patched(f, good, `${title}.qcow2`, [[at, u64(value)]]);
    const ro = await f.open(path, { 'read-only': true });
    const error = await t.throwsAsync(readNode(ro, 0, 4096));
    t.true(error instanceof BlockIoError && error.errno === 'EIO', title);
    t.regex(error!.message, new RegExp(`^qcow2: Image is corrupt: ${message.source}`));
    await f.close();
    const rw = await f.open(path);
    await t.throwsAsync(readNode(rw, 0, 4096), { message: new RegExp(`^qcow2: Marking image as corrupt: ${message.source}`) });
    await t.throwsAsync(rw.write(8 * MiB, Buffer.alloc(512)), { message: /Marking image as corrupt/ }, 'later requests fail too');
    await f.close();
    t.is((await readFile(path)).readBigUInt64BE(72) & 2n, 2n, `${title}: corrupt bit set on disk`);
  }
});

test('a v2 image with a zero flag is corrupt', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('v2.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', path, '4M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', path]);
  const bytes = await readFile(path);
  const at = l2EntryAt(bytes, 0);
  bytes.writeBigUInt64BE(bytes.readBigUInt64BE(at) | 1n, at);
  await writeFile(path, bytes);
  const node = await f.open(path, { 'read-only': true });
  await t.throwsAsync(readNode(node, 0, 512), { message: /Zero cluster entry found in pre-v3 image/ });
});

test('L2 entries past the end of the file read as zeroes; compressed data past it fails', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const good = await goodImage(t, f);
  const bytes = await readFile(good);
  const past = await patched(f, good, 'past.qcow2', [[l2EntryAt(bytes, 0), u64((1n << 63n) | 0x4000000000n)]]);
  const node = await f.open(past, { 'read-only': true });
  sameBytes(t, await readNode(node, 0, 4096), Buffer.alloc(4096));
  await f.close();
  const compressed = bytes.readBigUInt64BE(l2EntryAt(bytes, MiB));
  const moved = (compressed & ~((1n << 54n) - 1n)) | 0x3fff000000n;
  const gone = await patched(f, good, 'cgone.qcow2', [[l2EntryAt(bytes, MiB), u64(moved)]]);
  const reader = await f.open(gone, { 'read-only': true });
  await t.throwsAsync(readNode(reader, MiB, 4096), { message: /Could not decompress cluster|decompressed to 0 bytes/ });
});

test('a write that would land on metadata is refused and marks the image corrupt', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const good = await goodImage(t, f);
  const bytes = await readFile(good);
  const l1 = bytes.readBigUInt64BE(40);
  const l2 = bytes.readBigUInt64BE(Number(l1)) & 0x00fffffffffffe00n;
  for (const [host, what] of [
    [l1, 'active L1 table'],
    [0x10000n, 'refcount table'],
    [0x20000n, 'refcount block'],
    [l2, 'active L2 table'],
  ] as const) {
    // An allocated, COPIED data cluster that points at metadata: reading it is harmless, writing must not happen.
    const path = await patched(f, good, `ol-${what}.qcow2`, [[l2EntryAt(bytes, 2 * 65536), u64((1n << 63n) | host)]]);
    const before = await readFile(path);
    const node = await f.open(path);
    await readNode(node, 2 * 65536, 512);
    await t.throwsAsync(node.write(2 * 65536, Buffer.alloc(512, 0xff)), {
      message: `qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with ${what}); further corruption events will be suppressed`,
    });
    await f.close();
    const after = await readFile(path);
    t.is(after.readBigUInt64BE(72) & 2n, 2n, `${what}: corrupt bit set`);
    t.true(after.subarray(Number(host), Number(host) + 512).equals(before.subarray(Number(host), Number(host) + 512)), `${what}: untouched`);
  }
});

test('a header cluster with refcount 0 is never handed out', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const good = await goodImage(t, f);
  const path = await patched(f, good, 'rc0.qcow2', [[0x20000, Buffer.from([0, 0])]]);
  const node = await f.open(path);
  await t.throwsAsync(node.write(32 * MiB, Buffer.alloc(512)), { message: /Preventing invalid allocation of data cluster at offset 0/ });
});
