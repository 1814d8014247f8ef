/**
 * We write, QEMU validates (reference §9 case 20): thousands of random
 * writes, zero writes, discards and compressed writes — unaligned,
 * overlapping, crossing L2 and L1 boundaries, some in parallel, with the
 * image growing now and then — against
 * an in-memory shadow. Reads are checked along the way; at the end
 * `qemu-img check` must be clean, `qemu-img compare` must find the shadow,
 * and our block status must equal `qemu-img map`.
 */
import { readFile, writeFile } from 'node:fs/promises';
import test, { type ExecutionContext } from 'ava';
import type { BlockNode } from '../../../core/block/block-node.js';
import { randomFloats } from '../../helpers/prng.js';
import {
  assertClean,
  KiB,
  MiB,
  nodeMap,
  pseudoRandom,
  qcow2Fixture,
  qemuMap,
  readNode,
  requireQemu,
  run,
  runStatus,
  sameBytes,
} from './fixture.js';

interface FuzzConfig {
  title: string;
  createArgs: string[];
  size: number;
  clusterSize: number;
  version: 2 | 3;
  backing: boolean;
  ops: number;
  seed: number;
  refcountBits?: number;
  options?: Record<string, unknown>;
}

type Op = { kind: 'write' | 'zero' | 'zero-unmap' | 'discard' | 'compress' | 'read' | 'grow'; offset: number; length: number };

/** A random op within `size`; now and then the image grows by a few clusters (`length` bytes, a multiple of 512). */
function randomOp(random: () => number, c: FuzzConfig, size: number): Op {
  const cs = c.clusterSize;
  if (random() < 0.012) return { kind: 'grow', offset: size, length: 512 * Math.ceil((random() * 8 * cs) / 512) };
  const roll = random();
  const kind = roll < 0.45 ? 'write' : roll < 0.55 ? 'zero' : roll < 0.62 ? 'zero-unmap' : roll < 0.7 ? 'discard' : roll < 0.78 ? 'compress' : 'read';
  if (kind === 'compress') {
    const cluster = Math.floor(random() * Math.floor(size / cs));
    return { kind, offset: cluster * cs, length: cs };
  }
  const aligned = random() < 0.3;
  const maxLength = random() < 0.1 ? 40 * cs : 3 * cs;
  let offset = Math.floor(random() * size);
  let length = 1 + Math.floor(random() * maxLength);
  if (aligned) {
    offset -= offset % cs;
    length = Math.max(cs, length - (length % cs));
  }
  length = Math.min(length, size - offset);
  return { kind, offset, length };
}

/** The guest view, which grows with the image. */
interface Shadow {
  data: Buffer;
}

/** Applies `op` to the node and the shadow. */
async function apply(t: ExecutionContext, node: BlockNode, shadow: Shadow, base: Buffer | undefined, c: FuzzConfig, op: Op, seed: number): Promise<void> {
  const cs = c.clusterSize;
  const end = op.offset + op.length;
  const size = shadow.data.length;
  switch (op.kind) {
    case 'grow': {
      await node.truncate(size + op.length);
      shadow.data = Buffer.concat([shadow.data, Buffer.alloc(op.length)]);
      return;
    }
    case 'write': {
      const data = pseudoRandom(op.length, seed);
      await node.write(op.offset, data);
      data.copy(shadow.data, op.offset);
      return;
    }
    case 'zero':
    case 'zero-unmap':
      await node.writeZeroes(op.offset, op.length, { mayUnmap: op.kind === 'zero-unmap' });
      shadow.data.fill(0, op.offset, end);
      return;
    case 'discard': {
      await node.discard(op.offset, op.length);
      const first = Math.ceil(op.offset / cs) * cs;
      const last = end === size ? end : Math.floor(end / cs) * cs;
      if (last <= first) return;
      // v2 has no zero flag: a discarded cluster shows the backing file again.
      if (c.version === 2 && base !== undefined) {
        shadow.data.fill(0, first, last);
        if (first < base.length) base.copy(shadow.data, first, first, Math.min(last, base.length));
      } else {
        shadow.data.fill(0, first, last);
      }
      return;
    }
    case 'compress': {
      const data = random4(seed, op.length);
      try {
        await node.write(op.offset, data, { compressed: true });
        data.copy(shadow.data, op.offset);
      } catch (error) {
        t.regex((error as Error).message, /compressed data can only be written to unallocated clusters/);
      }
      return;
    }
    case 'read':
      sameBytes(t, await readNode(node, op.offset, op.length), shadow.data.subarray(op.offset, end), `read ${op.offset}+${op.length}`);
  }
}

/** Compressible data: runs of a few byte values. */
function random4(seed: number, length: number): Buffer {
  const noise = pseudoRandom(length, seed);
  return Buffer.from(noise.map((b, i) => (noise[i - (i % 64)]! & 3) * 17 + (b & 1)));
}

/** Cluster ranges of the ops, to run only non-overlapping ones in parallel. */
function clusters(op: Op, cs: number): [number, number] {
  return [Math.floor(op.offset / cs), Math.ceil((op.offset + op.length) / cs)];
}

async function fuzz(t: ExecutionContext, c: FuzzConfig): Promise<void> {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('fuzz.qcow2');
  let base: Buffer | undefined;
  if (c.backing) {
    base = pseudoRandom(c.size, c.seed + 1);
    await writeFile(f.path('base.raw'), base);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...c.createArgs, '-b', 'base.raw', '-F', 'raw', image, String(c.size)]);
  } else {
    const compat = c.version === 2 ? '0.10' : '1.1';
    await f.create({ filename: image, size: c.size, cluster_size: c.clusterSize, compat, refcount_bits: c.refcountBits ?? 16 });
  }
  const shadow: Shadow = { data: base === undefined ? Buffer.alloc(c.size) : Buffer.from(base) };
  const node = await f.open(image, { discard: 'unmap', ...c.options });
  const random = randomFloats(c.seed);
  const started = Date.now();
  let done = 0;
  let grown = 0;
  while (done < c.ops) {
    // A batch of up to 6 ops on disjoint clusters runs in parallel; the rest waits for the next batch.
    const batch: Op[] = [];
    const taken: [number, number][] = [];
    for (let i = 0; i < 6 && done + batch.length < c.ops; i++) {
      const op = randomOp(random, c, shadow.data.length);
      const [a, b] = clusters(op, c.clusterSize);
      // A resize runs alone.
      if (op.kind === 'grow' ? batch.length > 0 : batch[0]?.kind === 'grow') break;
      if (taken.some(([x, y]) => a < y && x < b)) break;
      taken.push([a, b]);
      batch.push(op);
    }
    await Promise.all(batch.map((op, i) => apply(t, node, shadow, base, c, op, c.seed * 100003 + done + i)));
    grown += batch.filter((op) => op.kind === 'grow').length;
    done += batch.length;
    if (random() < 0.02) await node.flush();
  }
  sameBytes(t, await readNode(node), shadow.data, 'whole image before close');
  t.log(`${c.title}: ${done} ops (${grown} resizes) in ${Date.now() - started} ms`);
  await f.close();
  await writeFile(f.path('shadow.raw'), shadow.data);
  await assertClean(t, image);
  const compare = await runStatus('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, f.path('shadow.raw')]);
  t.is(compare.code, 0, compare.stdout + compare.stderr);
  const reopened = await f.open(image, { 'read-only': true });
  const theirs = await qemuMap(image);
  t.deepEqual(await nodeMap(reopened), theirs, 'block status agrees with qemu-img map');
  for (const range of theirs.filter((r) => r.zero)) {
    t.true(shadow.data.subarray(range.start, range.start + range.length).every((b) => b === 0), `zero range at ${range.start}`);
  }
  t.true((await readFile(f.path('shadow.raw'))).equals(shadow.data));
}

const configs: FuzzConfig[] = [
  { title: 'v3, 4k clusters, 24M (12 L2 tables)', createArgs: [], size: 24 * MiB, clusterSize: 4 * KiB, version: 3, backing: false, ops: 2000, seed: 11 },
  { title: 'v3, 512 B clusters, 6M (L1 and refcount table growth pressure)', createArgs: [], size: 6 * MiB, clusterSize: 512, version: 3, backing: false, ops: 1200, seed: 12 },
  { title: 'v2, 64k clusters, 40M', createArgs: [], size: 40 * MiB, clusterSize: 64 * KiB, version: 2, backing: false, ops: 800, seed: 13 },
  {
    title: 'v3, 32k clusters, 1-bit refcounts (compressed clusters cannot share)',
    createArgs: [],
    size: 8 * MiB,
    clusterSize: 32 * KiB,
    version: 3,
    backing: false,
    ops: 400,
    seed: 16,
    refcountBits: 1,
  },
  {
    title: 'v3 overlay on a raw base, 8k clusters, 4k L2 cache entries, a tiny cache, lazy refcounts',
    createArgs: ['-o', 'cluster_size=8k,lazy_refcounts=on'],
    size: 12 * MiB,
    clusterSize: 8 * KiB,
    version: 3,
    backing: true,
    ops: 1200,
    seed: 14,
    options: { 'l2-cache-size': 8192, 'l2-cache-entry-size': 4096, 'refcount-cache-size': 4 * 8192 },
  },
  { title: 'v2 overlay on a raw base, 16k clusters', createArgs: ['-o', 'cluster_size=16k,compat=0.10'], size: 10 * MiB, clusterSize: 16 * KiB, version: 2, backing: true, ops: 800, seed: 15 },
];

for (const config of configs) test(`fuzz: ${config.title}`, (t) => fuzz(t, config));
