/**
 * drive-backup with `format: "qcow2"`: the job creates the qcow2 target
 * itself (ImageCreator, the qemu-img create code), copies into it while
 * the guest keeps writing, and completes; `qemu-img check` finds the target
 * clean and `qemu-img compare` finds it equal to the source as it was when
 * the job started (the guest's writes during the backup are not in it).
 *
 * - sync=full of a raw source with data, written zeroes and holes;
 * - sync=top of a qcow2 overlay on a raw base: the target is created with
 *   the overlay's backing file, holds only what the overlay allocates
 *   (zero clusters hiding the base included), and reads as the overlay did.
 *
 * The guest's writes during the job cover data, holes, zero clusters and
 * partial clusters, so copy-before-write runs on each kind.
 */
import { execFile } from 'node:child_process';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import type { BlockBackend } from '../../../core/block/block-backend.js';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { BlockLayerEvent } from '../../../core/hooks/block-layer-hooks.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const KiB = 1024;

function havePeers(t: ExecutionContext): boolean {
  return requirePeer(t, 'qemu-img') && requirePeer(t, 'qemu-io');
}

async function qemuIo(format: string, image: string, commands: readonly string[]): Promise<void> {
  await run('qemu-io', ['-f', format, ...commands.flatMap((c) => ['-c', c]), image]);
}

interface Session {
  layer: BlockLayer;
  dev: BlockBackend;
  events: BlockLayerEvent[];
}

/** A layer with `source` (options of its node) behind the device `virtio0`. */
async function open(t: ExecutionContext, source: Record<string, unknown>): Promise<Session> {
  const layer = await createTestLayer({ plugins: ['file', 'raw', 'qcow2', 'backup', 'job-commands', 'transaction', 'qmp-block-commands'] });
  t.teardown(() => layer.close());
  const events: BlockLayerEvent[] = [];
  layer.hooks.event.tap('test', (event) => void events.push(event));
  const node = await layer.graph.add({ 'node-name': 'src', ...source });
  return { layer, dev: layer.graph.attachBackend('virtio0', node), events };
}

/** Waits for the job's BLOCK_JOB_COMPLETED (or CANCELLED) and returns it. */
async function ended(session: Session, id: string): Promise<BlockLayerEvent> {
  for (let i = 0; i < 2000; i++) {
    const found = session.events.find((e) => ['BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED'].includes(e.event) && e.data?.device === id);
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`job ${id} did not end: ${session.events.map((e) => e.event).join(', ')}`);
}

/**
 * Starts drive-backup at 1 byte/s (one chunk goes, then the job sleeps),
 * lets the guest write `writes` through the device, then lifts the limit.
 */
async function backupWhileWriting(
  session: Session,
  args: Record<string, unknown>,
  writes: (dev: BlockBackend) => Promise<void>,
): Promise<BlockLayerEvent> {
  await session.layer.execute('drive-backup', { 'job-id': 'b', device: 'virtio0', format: 'qcow2', speed: 1, ...args });
  await writes(session.dev);
  await session.layer.execute('block-job-set-speed', { device: 'b', speed: 0 });
  return ended(session, 'b');
}

async function assertClean(t: ExecutionContext, image: string): Promise<void> {
  const { stdout } = await run('qemu-img', ['check', '-f', 'qcow2', image]);
  t.regex(stdout, /^No errors were found on the image\./, `qemu-img check ${image}`);
}

async function compare(a: [string, string], b: [string, string]): Promise<string> {
  try {
    return (await run('qemu-img', ['compare', '-f', a[1], '-F', b[1], a[0], b[0]])).stdout.trim();
  } catch (error) {
    return `${(error as { stdout?: string }).stdout ?? ''}${(error as Error).message}`.trim();
  }
}

/** qemu-img map of an image, as (start, length, depth, zero, data) runs with neighbours of the same kind merged. */
async function allocation(image: string): Promise<string[]> {
  const { stdout } = await run('qemu-img', ['map', '--output=json', '-f', 'qcow2', image]);
  const runs: { start: number; length: number; key: string }[] = [];
  for (const e of JSON.parse(stdout) as { start: number; length: number; depth: number; zero: boolean; data: boolean }[]) {
    const key = `depth=${e.depth} zero=${e.zero} data=${e.data}`;
    const last = runs.at(-1);
    if (last !== undefined && last.key === key && last.start + last.length === e.start) last.length += e.length;
    else runs.push({ start: e.start, length: e.length, key });
  }
  return runs.map((r) => `${r.start}+${r.length} ${r.key}`);
}

test('sync=full of a raw source with data, zeroes and holes: a clean qcow2 target equal to the source at the start', async (t) => {
  if (!havePeers(t)) return;
  const dir = await tempDir(t, 'blocklayer-drive-backup-qcow2-');
  const src = join(dir, 'src.raw');
  const atStart = join(dir, 'src-at-start.raw');
  const target = join(dir, 'target.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'raw', src, '16M']);
  // Data (some of it unaligned), zeroes written as data and as write-zeroes, and holes between.
  await qemuIo('raw', src, ['write -P 0x11 0 1M', 'write -P 0x22 1536k 300k', 'write -P 0 3M 1M', 'write -z 5M 2M', 'write -P 0x33 6M 64k', 'write -P 0x44 15M 1M']);
  await copyFile(src, atStart);
  const session = await open(t, { driver: 'raw', file: { driver: 'file', filename: src } });
  const completed = await backupWhileWriting(session, { target, sync: 'full' }, async (dev) => {
    await dev.write(0, Buffer.alloc(64 * KiB, 0xa1));
    await dev.write(8 * MiB, Buffer.alloc(MiB, 0xa2));
    await dev.write(15 * MiB + 4 * KiB, Buffer.alloc(12 * KiB, 0xa3));
    await dev.writeZeroes(MiB, MiB);
  });
  t.deepEqual(completed.data, { device: 'b', len: 16 * MiB, offset: 16 * MiB, speed: 0, type: 'backup' });
  t.deepEqual(await session.layer.execute('query-jobs'), []);
  await session.layer.close();
  await assertClean(t, target);
  t.is(await compare([atStart, 'raw'], [target, 'qcow2']), 'Images are identical.');
  t.regex(await compare([src, 'raw'], [target, 'qcow2']), /^Content mismatch/, 'the guest wrote during the backup');
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', target])).stdout) as Record<string, unknown>;
  t.like(info, { format: 'qcow2', 'virtual-size': 16 * MiB });
  t.is(info['backing-filename'], undefined, 'sync=full: no backing file');
});

test('sync=top of a qcow2 overlay on a raw base: the target is backed by the base and reads as the overlay did', async (t) => {
  if (!havePeers(t)) return;
  const dir = await tempDir(t, 'blocklayer-drive-backup-qcow2-');
  const base = join(dir, 'base.raw');
  const top = join(dir, 'top.qcow2');
  const topAtStart = join(dir, 'top-at-start.qcow2');
  const target = join(dir, 'target.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'raw', base, '8M']);
  await qemuIo('raw', base, ['write -P 0xb0 0 8M']);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', top]);
  // Data of the overlay, zero clusters hiding the base, and the rest unallocated (the base shows).
  await qemuIo('qcow2', top, ['write -P 0x71 0 128k', 'write -z 1M 256k', 'write -P 0x72 3M 64k', 'write -P 0 4M 64k', 'write -P 0x73 7M 1M']);
  await copyFile(top, topAtStart);
  const session = await open(t, { driver: 'qcow2', file: { driver: 'file', filename: top } });
  const completed = await backupWhileWriting(session, { target, sync: 'top' }, async (dev) => {
    await dev.write(0, Buffer.alloc(4 * KiB, 0xc1));
    await dev.write(2 * MiB, Buffer.alloc(128 * KiB, 0xc2));
    await dev.writeZeroes(7 * MiB, 64 * KiB);
    await dev.write(MiB + 64 * KiB, Buffer.alloc(64 * KiB, 0xc3));
  });
  t.is(completed.data?.error, undefined);
  await session.layer.close();
  await assertClean(t, target);
  t.is(await compare([topAtStart, 'qcow2'], [target, 'qcow2']), 'Images are identical.');
  t.regex(await compare([top, 'qcow2'], [target, 'qcow2']), /^Content mismatch/, 'the guest wrote during the backup');
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', target])).stdout) as Record<string, unknown>;
  t.like(info, { 'backing-filename': base, 'backing-filename-format': 'raw', 'virtual-size': 8 * MiB });
  // The overlay's cluster of data zeroes becomes a zero cluster: drive-backup opens its target with
  // detect-zeroes=unmap, as QEMU does. Otherwise the target allocates exactly what the overlay did.
  const expected = (await allocation(topAtStart)).map((r) =>
    r.startsWith(`${4 * MiB}+`) ? r.replace('zero=false data=true', 'zero=true data=false') : r,
  );
  t.deepEqual(await allocation(target), expected, 'the target holds what the overlay held, no more');
});
