/**
 * Helpers for the qcow2 tests: a layer with the qcow2, file and raw drivers
 * and a temporary directory per test, the QEMU tools as oracles, and block
 * status reduced to what `qemu-img map --output=json` reports.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { BlockNode } from '../../../core/block/block-node.js';
import type { ImageCreator } from '../../../core/block/image-creator.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';
import type { Qcow2Image } from '../../../drivers/qcow2/qcow2-image.js';
import { type CommandResult, commandResult } from '../../helpers/command-result.js';
import { requirePeer } from '../../helpers/peers.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

const execFileAsync = promisify(execFile);

/** Runs a program; resolves with its stdout, or rejects with the error (its `code`, `stdout`, `stderr`). */
export async function run(command: string, args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(command, args, { maxBuffer: 64 * MiB });
  return stdout;
}

/** Runs a program and returns its exit code and output, whatever the code. */
export const runStatus = (command: string, args: string[]): Promise<CommandResult> => commandResult(command, args);

export interface Qcow2Fixture {
  layer: BlockLayer;
  path(name: string): string;
  /**
   * Opens the image `file` as node `name` (read-write unless the options say
   * otherwise). The file node ignores flushes: these tests need the page
   * cache only, and fdatasync would make them slow (crash.test.ts covers
   * the flush ordering).
   */
  open(file: string, options?: Record<string, unknown>, name?: string): Promise<BlockNode>;
  /** Closes node `name` (and the file and backing nodes it opened). */
  close(name?: string): Promise<void>;
  create(options: Record<string, unknown>): Promise<void>;
}

/** True when qemu-img and qemu-io are there (see requirePeer). */
export function requireQemu(t: ExecutionContext): boolean {
  return requirePeer(t, 'qemu-img') && requirePeer(t, 'qemu-io');
}

export async function qcow2Fixture(t: ExecutionContext): Promise<Qcow2Fixture> {
  const layer = await createTestLayer({ plugins: ['qcow2', 'file', 'raw'] });
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-qcow2-'));
  t.teardown(async () => {
    await layer.close();
    await rm(dir, { recursive: true, force: true });
  });
  const creator = layer.container.get<ImageCreator>(TOKENS.ImageCreator);
  return {
    layer,
    path: (name) => join(dir, name),
    open: (file, options = {}, name = 'q') =>
      layer.graph.add({
        driver: 'qcow2',
        'node-name': name,
        file: { driver: 'file', filename: file, cache: { 'no-flush': true } },
        ...options,
      }),
    close: (name = 'q') => layer.graph.del(name),
    create: (options) => creator.create('qcow2', options),
  };
}

export function imageOf(node: BlockNode): Qcow2Image {
  return node.driverState as Qcow2Image;
}

export async function readNode(node: BlockNode, offset = 0, length = node.length): Promise<Buffer> {
  const buf = Buffer.alloc(length, 0x55);
  await node.read(offset, buf);
  return buf;
}

/** Buffer equality without ava's deep diff, which is very slow on megabytes. */
export function sameBytes(t: ExecutionContext, actual: Buffer, expected: Buffer, message?: string): void {
  if (actual.equals(expected)) {
    t.pass(message);
    return;
  }
  let at = 0;
  while (at < Math.min(actual.length, expected.length) && actual[at] === expected[at]) at++;
  t.fail(`${message ?? 'bytes differ'}: first difference at ${at} (lengths ${actual.length}, ${expected.length})`);
}

/** One range of a map, in qemu-img map's terms; `offset` only for data stored as is in this image's file. */
export interface MapRange {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
  offset?: number;
}

function merge(ranges: MapRange[]): MapRange[] {
  const merged: MapRange[] = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    const offsetsJoin =
      last !== undefined &&
      (last.offset === undefined ? r.offset === undefined : r.offset !== undefined && last.offset + last.length === r.offset);
    if (last !== undefined && last.data === r.data && last.zero === r.zero && offsetsJoin) last.length += r.length;
    else merged.push({ ...r });
  }
  return merged;
}

/** `qemu-img map --output=json`, merged, with host offsets of this image's own data only. */
export async function qemuMap(path: string, format = 'qcow2'): Promise<MapRange[]> {
  const entries = JSON.parse(await run('qemu-img', ['map', '--output=json', '-f', format, path])) as {
    start: number;
    length: number;
    depth: number;
    zero: boolean;
    data: boolean;
    offset?: number;
  }[];
  return merge(
    entries.map((e) => {
      const range: MapRange = { start: e.start, length: e.length, data: e.data, zero: e.zero };
      if (e.depth === 0 && e.data && e.offset !== undefined) range.offset = e.offset;
      return range;
    }),
  );
}

/** Our block status over the whole node, in the same terms. */
export async function nodeMap(node: BlockNode): Promise<MapRange[]> {
  const extents = await node.blockStatus(0, node.length);
  return merge(
    extents.map((e) => {
      const range: MapRange = { start: e.offset, length: e.length, data: e.data, zero: e.zero };
      if (e.allocated && e.data && e.hostOffset !== undefined) range.offset = e.hostOffset;
      return range;
    }),
  );
}

/** `qemu-img check --output=json`: its exit code and report. */
export async function qemuCheck(path: string): Promise<{ code: number; report: Record<string, number | string> }> {
  const { code, stdout } = await runStatus('qemu-img', ['check', '--output=json', '-f', 'qcow2', path]);
  return { code, report: stdout.trim() === '' ? {} : (JSON.parse(stdout) as Record<string, number | string>) };
}

/** Asserts that `qemu-img check` finds the image clean: no corruption, no leak. */
export async function assertClean(t: ExecutionContext, path: string): Promise<Record<string, number | string>> {
  const { code, report } = await qemuCheck(path);
  t.is(code, 0, `qemu-img check ${path}: ${JSON.stringify(report)}`);
  t.is(report.corruptions, undefined);
  t.is(report.leaks, undefined);
  return report;
}

/** The image flattened by QEMU (qemu-img convert -O raw). */
export async function qemuFlatten(path: string, raw: string, format = 'qcow2'): Promise<void> {
  await run('qemu-img', ['convert', '-f', format, '-O', 'raw', path, raw]);
}

/** A deterministic pseudo-random buffer (xorshift), so failures reproduce. */
export function pseudoRandom(length: number, seed: number): Buffer {
  const buf = Buffer.alloc(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf[i] = x & 0xff;
  }
  return buf;
}

/** Reads `[offset, offset + length)` of a raw file (zeroes past its end). */
async function readRaw(path: string, offset: number, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    await handle.read(buf, 0, length, offset);
    return buf;
  } finally {
    await handle.close();
  }
}

const COMPARE_CHUNK = 4 * MiB;

/**
 * Compares the node with QEMU's view of the image: block status against
 * `qemu-img map`, and data against `qemu-img convert -O raw` — every byte
 * when `full`, else every data range and the first and last chunk of
 * each zero range (for huge sparse images).
 */
export async function compareWithQemu(
  t: ExecutionContext,
  node: BlockNode,
  path: string,
  raw: string,
  full = true,
): Promise<void> {
  const theirs = await qemuMap(path);
  t.deepEqual(await nodeMap(node), theirs, 'block status agrees with qemu-img map');
  await qemuFlatten(path, raw);
  for (const range of theirs) {
    const chunks: number[] = [];
    for (let at = range.start; at < range.start + range.length; at += COMPARE_CHUNK) chunks.push(at);
    const sampled = full || range.data ? chunks : [...new Set([chunks[0]!, chunks[chunks.length - 1]!])];
    for (const at of sampled) {
      const length = Math.min(COMPARE_CHUNK, range.start + range.length - at);
      sameBytes(t, await readNode(node, at, length), await readRaw(raw, at, length), `bytes at ${at}`);
    }
  }
}
