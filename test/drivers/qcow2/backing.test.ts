/**
 * Backing chains: relative names resolved against the overlay's directory,
 * the recorded backing format used (never probed), the `backing` option
 * overriding the header, and the chains we refuse (no format, protocols,
 * loops, depth).
 */
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { MAX_BACKING_DEPTH } from '../../../drivers/qcow2/qcow2-backing.js';
import { compareWithQemu, imageOf, MiB, qcow2Fixture, readNode, requireQemu, run, sameBytes } from './fixture.js';

async function qemuCreate(path: string, size: string | undefined, args: string[]): Promise<void> {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...args, path, ...(size === undefined ? [] : [size])]);
}

async function qemuIo(path: string, ...commands: string[]): Promise<void> {
  await run('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), path]);
}

test('a three-level chain with relative names, a larger top and zero clusters hiding the base', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const dir = f.path('rel');
  await mkdir(dir);
  await qemuCreate(join(dir, 'base.qcow2'), '4M', []);
  await qemuIo(join(dir, 'base.qcow2'), 'write -P 0x01 0 4M');
  await qemuCreate(join(dir, 'mid.qcow2'), undefined, ['-b', 'base.qcow2', '-F', 'qcow2']);
  await qemuIo(join(dir, 'mid.qcow2'), 'write -z 128k 128k', 'write -P 0x02 1M 64k', 'discard 2M 64k');
  await qemuCreate(join(dir, 'top.qcow2'), '8M', ['-b', 'mid.qcow2', '-F', 'qcow2']);
  await qemuIo(join(dir, 'top.qcow2'), 'write -P 0x03 1056k 8k', 'write -P 0x04 6M 64k');
  const node = await f.open(join(dir, 'top.qcow2'), { 'read-only': true });
  const mid = node.children.get('backing')!.node;
  t.is(mid.driver.name, 'qcow2');
  t.true(mid.readOnly);
  t.is(mid.children.get('backing')!.node.driver.name, 'qcow2');
  await compareWithQemu(t, node, join(dir, 'top.qcow2'), f.path('top.raw'));
  const [unallocated] = await node.blockStatus(4 * MiB, 64 * 1024);
  t.deepEqual(unallocated, { offset: 4 * MiB, length: 64 * 1024, data: false, zero: true, allocated: false });
  const [fromBacking] = await node.blockStatus(0, 64 * 1024);
  t.like(fromBacking, { data: true, zero: false, allocated: false });
});

test('backing: null opens no backing file; a given backing node replaces the header one', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await qemuCreate(f.path('base.qcow2'), '1M', []);
  await qemuIo(f.path('base.qcow2'), 'write -P 0x0b 0 1M');
  await qemuCreate(f.path('other.qcow2'), '1M', []);
  await qemuIo(f.path('other.qcow2'), 'write -P 0x0c 0 1M');
  await qemuCreate(f.path('top.qcow2'), undefined, ['-b', 'base.qcow2', '-F', 'qcow2']);
  const alone = await f.open(f.path('top.qcow2'), { backing: null, 'read-only': true });
  t.is(alone.children.get('backing'), undefined);
  sameBytes(t, await readNode(alone, 0, 4096), Buffer.alloc(4096));
  await f.close();
  await f.layer.graph.add({ driver: 'qcow2', 'node-name': 'other', 'read-only': true, file: { driver: 'file', filename: f.path('other.qcow2') } });
  const over = await f.open(f.path('top.qcow2'), { backing: 'other', 'read-only': true });
  sameBytes(t, await readNode(over, 0, 4096), Buffer.alloc(4096, 0x0c));
  t.true(imageOf(over).explicitBacking);
});

test('a backing file without a recorded format is refused, never probed', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await qemuCreate(f.path('base.qcow2'), '1M', []);
  await qemuCreate(f.path('top.qcow2'), '1M', ['-b', 'base.qcow2', '-F', 'qcow2']);
  // qemu-img 7.2 cannot make such an image any more: turn the backing-format extension into an unknown one.
  const handle = await open(f.path('top.qcow2'), 'r+');
  const header = Buffer.alloc(4096);
  await handle.read(header, 0, header.length, 0);
  await handle.write(Buffer.from([0x12, 0x34, 0x56, 0x78]), 0, 4, header.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca])));
  await handle.close();
  await t.throwsAsync(f.open(f.path('top.qcow2'), { 'read-only': true }), {
    message: /^Backing file 'base\.qcow2' of image '.*top\.qcow2' has no backing format, and blocklayer does not probe formats/,
  });
});

test('protocol and json: backing names are refused', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  for (const [name, file] of [['json:{"driver":"file","filename":"/etc/passwd"}', 'j.qcow2'], ['nbd://localhost/x', 'n.qcow2']] as const) {
    await qemuCreate(f.path(file), '1M', []);
    await run('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', name, '-F', 'raw', f.path(file)]);
    await t.throwsAsync(f.open(f.path(file), { 'read-only': true }), { message: /names a protocol; only file names are supported/ });
  }
});

test('a loop in the backing chain is detected', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await qemuCreate(f.path('a.qcow2'), '1M', []);
  await qemuCreate(f.path('b.qcow2'), '1M', ['-b', 'a.qcow2', '-F', 'qcow2']);
  await run('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', f.path('a.qcow2')]);
  await t.throwsAsync(f.open(f.path('b.qcow2'), { 'read-only': true }), { message: /is part of its own backing chain \(a loop\)/ });
  await run('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', f.path('a.qcow2')]);
  await t.throwsAsync(f.open(f.path('a.qcow2'), { 'read-only': true }), { message: /is part of its own backing chain/ });
  t.deepEqual(f.layer.graph.list(), []);
});

test(`a chain deeper than ${MAX_BACKING_DEPTH} images is refused`, async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await writeFile(f.path('0.raw'), Buffer.alloc(512));
  // Headers written by hand: 65 qemu-img runs would take seconds.
  const template = f.path('template.qcow2');
  await qemuCreate(template, '512', ['-o', 'cluster_size=4096']);
  const bytes = await readFile(template);
  for (let i = 1; i <= MAX_BACKING_DEPTH + 1; i++) {
    const name = i === 1 ? '0.raw' : `${i - 1}.qcow2`;
    const image = Buffer.from(bytes);
    const nameAt = 0x200;
    image.write(name, nameAt);
    image.writeBigUInt64BE(BigInt(nameAt), 8);
    image.writeUInt32BE(name.length, 16);
    // A backing-format extension right after the header: "raw" for the first, "qcow2" above.
    const format = i === 1 ? 'raw' : 'qcow2';
    image.writeUInt32BE(0xe2792aca, 112);
    image.writeUInt32BE(format.length, 116);
    image.fill(0, 120, 0x200);
    image.write(format, 120);
    await writeFile(f.path(`${i}.qcow2`), image);
  }
  const shallow = await f.open(f.path(`${MAX_BACKING_DEPTH - 1}.qcow2`), { 'read-only': true });
  t.is(shallow.length, 512);
  await f.close();
  await t.throwsAsync(f.open(f.path(`${MAX_BACKING_DEPTH + 1}.qcow2`), { 'read-only': true }), {
    message: new RegExp(`is deeper than ${MAX_BACKING_DEPTH} images`),
  });
});
