/**
 * Helpers for the file driver tests, and the core suite that runs twice:
 * with the native addon (core.test.ts) and with the portable fallback
 * (fallback.test.ts), so both paths give the same results.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, open, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import { BlockGraph } from '../../../core/block/block-graph.js';
import type { BlockNode } from '../../../core/block/block-node.js';
import type { BlockDriverDefinition } from '../../../core/block/driver.js';
import { DriverRegistry } from '../../../core/block/driver-registry.js';
import { BlockLayerHooks } from '../../../core/hooks/block-layer-hooks.js';
import { QapiValidator } from '../../../core/schema/qapi-validator.js';
import type { FileState } from '../../../drivers/file/driver.js';
import { loadFileNativeOps } from '../../../drivers/file/native/native.js';

export const KiB = 1024;
/** The creation services a file needs none of. */
export const NO_OTHER_IMAGES = {
  createWith: async (): Promise<void> => {},
  writeCreated: (): Promise<never> => Promise.reject(new Error('a file is created without other images')),
};

export const MiB = 1024 * KiB;

export interface FileFixture {
  graph: BlockGraph;
  /** A path inside this test's temporary directory. */
  path(name: string): string;
  /** Opens `filename` as node `node-name` 'f' (plus any extra options). */
  add(filename: string, extra?: Record<string, unknown>): Promise<BlockNode>;
}

/** A graph with only `driver` registered, and a temporary directory (under `base`), both cleaned up after the test. */
export async function fileFixture(t: ExecutionContext, driver: BlockDriverDefinition, base = tmpdir()): Promise<FileFixture> {
  const validator = new QapiValidator();
  const registry = new DriverRegistry(validator);
  registry.register(driver, 'file');
  const graph = new BlockGraph(registry, validator, new BlockLayerHooks());
  const dir = await mkdtemp(join(base, 'blocklayer-file-'));
  t.teardown(async () => {
    await graph.closeAll();
    await rm(dir, { recursive: true, force: true });
  });
  return {
    graph,
    path: (name) => join(dir, name),
    add: (filename, extra = {}) => graph.add({ driver: 'file', 'node-name': 'f', filename, ...extra }),
  };
}

/** A file of `size` bytes with `pattern` bytes written at each [offset, length] (the rest is a hole). */
export async function sparseFile(path: string, size: number, extents: [number, number, number][] = []): Promise<void> {
  await writeFile(path, '');
  await truncate(path, size);
  const handle = await open(path, 'r+');
  try {
    for (const [offset, length, pattern] of extents) await handle.write(Buffer.alloc(length, pattern), 0, length, offset);
  } finally {
    await handle.close();
  }
}

/** 512-byte sectors the file occupies on the host. */
export async function sectors(path: string): Promise<number> {
  return (await stat(path)).blocks;
}

export async function run(command: string, args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(command, args);
  return stdout;
}

/** `qemu-img map` of a raw file, reduced to what block status reports. */
export async function qemuMap(path: string): Promise<{ offset: number; length: number; data: boolean; zero: boolean }[]> {
  const map = JSON.parse(await run('qemu-img', ['map', '--output=json', '-f', 'raw', path])) as {
    start: number;
    length: number;
    data: boolean;
    zero: boolean;
  }[];
  return map.map(({ start, length, data, zero }) => ({ offset: start, length, data, zero }));
}

/** Our block status over the whole node, in qemu-img map's terms. */
export async function nodeMap(node: BlockNode): Promise<{ offset: number; length: number; data: boolean; zero: boolean }[]> {
  const extents = await node.blockStatus(0, node.length);
  return extents.map(({ offset, length, data, zero }) => ({ offset, length, data, zero }));
}

export async function readNode(node: BlockNode, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length, 0x55);
  await node.read(offset, buf);
  return buf;
}

export function filled(length: number, byte: number): Buffer {
  return Buffer.alloc(length, byte);
}

/** Buffer equality without ava's deep diff, which is very slow on megabytes. */
export function sameBytes(t: ExecutionContext, actual: Buffer, expected: Buffer, message?: string): void {
  t.true(actual.equals(expected), message);
}

/**
 * True if the native addon is loaded. Otherwise the test passes with a log
 * line when BLOCKLAYER_NO_NATIVE=1 asked for that, and fails if the addon
 * should be there (the install script builds it).
 */
export function requireNative(t: ExecutionContext): boolean {
  const native = loadFileNativeOps();
  if (native.ops !== undefined) return true;
  if (process.env.BLOCKLAYER_NO_NATIVE === '1') {
    t.log('skipped: BLOCKLAYER_NO_NATIVE=1');
    t.pass();
  } else {
    t.fail(`the file driver's native addon is missing: ${native.reason}`);
  }
  return false;
}

/** The tests both the native and the fallback path must pass; `sparseOps` is what describe() should say. */
export function registerCoreTests(driver: BlockDriverDefinition, sparseOps: 'native' | 'fallback'): void {
  test(`[${sparseOps}] write then read back, with parallel non-overlapping requests`, async (t) => {
    const f = await fileFixture(t, driver);
    await sparseFile(f.path('a.img'), 4 * MiB);
    const node = await f.add(f.path('a.img'));
    t.is(node.length, 4 * MiB);
    await node.write(12345, filled(70000, 0x11));
    sameBytes(t, await readNode(node, 12345, 70000), filled(70000, 0x11));
    const chunks = Array.from({ length: 32 }, (_, i) => i);
    await Promise.all(chunks.map((i) => node.write(i * 128 * KiB, filled(128 * KiB, i + 1))));
    const back = await Promise.all(chunks.map((i) => readNode(node, i * 128 * KiB, 128 * KiB)));
    for (const i of chunks) sameBytes(t, back[i]!, filled(128 * KiB, i + 1), `chunk ${i}`);
    await node.flush();
  });

  test(`[${sparseOps}] open errors are worded as QEMU's`, async (t) => {
    const f = await fileFixture(t, driver);
    const missing = f.path('missing.img');
    await t.throwsAsync(f.add(missing), { message: `Could not open '${missing}': No such file or directory` });
    const dir = f.path('');
    await t.throwsAsync(f.add(dir), { message: `Could not open '${dir}': Is a directory` });
    await t.throwsAsync(f.add(dir, { 'read-only': true }), { message: `'file' driver requires '${dir}' to be a regular file` });
    await t.throwsAsync(f.add('/dev/null'), { message: "'file' driver requires '/dev/null' to be a regular file" });
    t.deepEqual(f.graph.list(), []);
  });

  // Serial: as root, the open runs under an unprivileged effective uid, which is process-wide.
  test.serial(`[${sparseOps}] an unreadable file: Permission denied`, async (t) => {
    const f = await fileFixture(t, driver);
    await writeFile(f.path('secret.img'), '', { mode: 0o000 });
    const asRoot = process.geteuid?.() === 0;
    if (asRoot) process.seteuid!(65534);
    try {
      await t.throwsAsync(f.add(f.path('secret.img')), { message: `Could not open '${f.path('secret.img')}': Permission denied` });
    } finally {
      if (asRoot) process.seteuid!(0);
    }
  });

  test(`[${sparseOps}] a read-only node opens the file read-only and refuses writes`, async (t) => {
    const f = await fileFixture(t, driver);
    await sparseFile(f.path('ro.img'), MiB, [[0, 4096, 0x7e]]);
    const node = await f.add(f.path('ro.img'), { 'read-only': true });
    sameBytes(t, await readNode(node, 0, 4096), filled(4096, 0x7e));
    await t.throwsAsync(node.write(0, filled(512, 1)), { message: "Block node 'f' is read-only" });
    await t.throwsAsync(node.writeZeroes(0, 512), { message: "Block node 'f' is read-only" });
    const { handle } = node.driverState as FileState;
    await t.throwsAsync(handle.write(filled(1, 1), 0, 1, 0), { code: 'EBADF' }, 'the descriptor itself is read-only');
  });

  test(`[${sparseOps}] bytes past the end of a file that shrank under us read as zeroes`, async (t) => {
    const f = await fileFixture(t, driver);
    await sparseFile(f.path('s.img'), MiB, [[0, MiB, 0x33]]);
    const node = await f.add(f.path('s.img'));
    await truncate(f.path('s.img'), 4096 + 100);
    const buf = await readNode(node, 4096, 8192);
    sameBytes(t, buf.subarray(0, 100), filled(100, 0x33));
    sameBytes(t, buf.subarray(100), filled(8092, 0));
    const status = await nodeMap(node);
    t.deepEqual(status[status.length - 1], { offset: 4196, length: MiB - 4196, data: false, zero: true });
  });

  test(`[${sparseOps}] write-zeroes with and without mayUnmap reads back zeroes`, async (t) => {
    const f = await fileFixture(t, driver);
    await sparseFile(f.path('z.img'), 2 * MiB, [[0, 2 * MiB, 0xee]]);
    const node = await f.add(f.path('z.img'), { discard: 'unmap' });
    await node.writeZeroes(4096, 64 * KiB);
    await node.writeZeroes(MiB, 64 * KiB + 1000, { mayUnmap: true });
    sameBytes(t, await readNode(node, 4096, 64 * KiB), filled(64 * KiB, 0));
    sameBytes(t, await readNode(node, MiB, 64 * KiB + 1000), filled(64 * KiB + 1000, 0));
    sameBytes(t, await readNode(node, 0, 4096), filled(4096, 0xee), 'neighbours untouched');
    sameBytes(t, await readNode(node, MiB + 64 * KiB + 1000, 100), filled(100, 0xee));
  });

  test(`[${sparseOps}] truncate grows and shrinks the file`, async (t) => {
    const f = await fileFixture(t, driver);
    await sparseFile(f.path('t.img'), MiB, [[0, MiB, 0x42]]);
    const node = await f.add(f.path('t.img'));
    await node.truncate(3 * MiB);
    t.is(node.length, 3 * MiB);
    t.is((await stat(f.path('t.img'))).size, 3 * MiB);
    sameBytes(t, await readNode(node, MiB - 10, 20), Buffer.concat([filled(10, 0x42), filled(10, 0)]));
    await node.truncate(512 * KiB);
    t.is(node.length, 512 * KiB);
    t.is((await stat(f.path('t.img'))).size, 512 * KiB);
  });

  test(`[${sparseOps}] create with each preallocation mode gives a zeroed file of the size asked`, async (t) => {
    const f = await fileFixture(t, driver);
    for (const preallocation of ['off', 'falloc', 'full'] as const) {
      const path = f.path(`${preallocation}.img`);
      await writeFile(path, filled(8 * MiB, 0xff));
      await driver.create!({ options: { filename: path, size: 3 * MiB + 512, preallocation, nocow: false }, ...NO_OTHER_IMAGES });
      t.is((await stat(path)).size, 3 * MiB + 512, preallocation);
      const node = await f.add(path);
      sameBytes(t, await readNode(node, 0, node.length), filled(3 * MiB + 512, 0), preallocation);
      await f.graph.del('f');
    }
    const bad = f.path('no/such/dir.img');
    await t.throwsAsync(driver.create!({ options: { filename: bad, size: 0 }, ...NO_OTHER_IMAGES }), {
      message: `Could not create '${bad}': No such file or directory`,
    });
  });

  test(`[${sparseOps}] describe() reports the file, its allocation and which sparse ops are used`, async (t) => {
    const f = await fileFixture(t, driver);
    await sparseFile(f.path('d.img'), 4 * MiB, [[0, 64 * KiB, 1]]);
    const node = await f.add(f.path('d.img'));
    const description = await driver.describe!(node.driverState);
    t.deepEqual(description, {
      filename: f.path('d.img'),
      actualSize: (await sectors(f.path('d.img'))) * 512,
      formatSpecific: { type: 'file', data: { 'sparse-ops': sparseOps } },
    });
    t.is(driver.capabilities?.canZero, sparseOps === 'native');
    t.is(driver.capabilities?.canDiscard, sparseOps === 'native');
  });
}
