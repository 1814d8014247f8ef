/**
 * `cow`: a tiny copy-on-write format for the image-tool tests, so backing
 * chains (depth, present, -B), compressed writes and checks can be tested
 * before qcow2 exists. Data lives in the `file` child at the guest offset;
 * which 4 KiB clusters are data, zeroes or unallocated, the backing file
 * and the check result live in `cowImages`, keyed by file name, for the
 * lifetime of the test process (a "header" outside the file).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import type { ExecutionContext } from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import { BlockdevRef, BlockdevRefOrNull } from '../../../core/block/blockdev-ref.js';
import { defineBlockDriver, type ImageCheckResult } from '../../../core/block/driver.js';
import type { NodeChild } from '../../../core/block/node-edge.js';
import type { BlockStatusExtent } from '../../../core/block/request.js';
import { BlockLayerError } from '../../../core/errors.js';
import { defaultManifest } from '../../../core/plugin/default-manifest.js';
import { driverPlugin } from '../../../core/plugin/driver-plugin.js';
import { Qapi, type Static } from '../../../core/schema/qapi.js';
import { createTestLayer } from '../../../core/testing/index.js';

export const COW_CLUSTER = 4096;

export interface CowImage {
  clusters: Map<number, 'data' | 'zero'>;
  backing?: { filename: string; format: string };
  /** What `check` reports (default: clean); repairs clear the leaks. */
  check?: ImageCheckResult;
  /** Offsets of compressed writes. */
  compressedWrites: number[];
  /** Whether the last open was read-only. */
  openedReadOnly?: boolean;
}

export const cowImages = new Map<string, CowImage>();

const options = Qapi.struct('BlockdevOptionsCow', {
  file: BlockdevRef,
  backing: Qapi.optional(BlockdevRefOrNull),
});

const createOptions = Qapi.struct('CowCreateOptions', {
  filename: Qapi.str(),
  size: Qapi.optional(Qapi.size()),
  backing_file: Qapi.optional(Qapi.str()),
  backing_fmt: Qapi.optional(Qapi.str()),
  cluster_size: Qapi.optional(Qapi.size()),
});

interface CowState {
  /** The file's name: the image's, as a backing file named in the "header" is not an option given. */
  name: string;
  file: NodeChild;
  backing: NodeChild | undefined;
  image: CowImage;
}

function clean(): ImageCheckResult {
  return { checkErrors: 0, corruptions: 0, leaks: 0, corruptionsFixed: 0, leaksFixed: 0, messages: [] };
}

async function fileName(child: NodeChild): Promise<string> {
  const own = await child.node.driver.describe?.(child.node.driverState);
  if (own?.filename === undefined) throw new BlockLayerError('cow needs a file with a name');
  return own.filename;
}

export const cowDriver = defineBlockDriver<Static<typeof options>, CowState, Static<typeof createOptions>>({
  name: 'cow',
  kind: 'format',
  summary: 'test copy-on-write format',
  options,
  children: [
    { name: 'file', required: true },
    { name: 'backing', required: false, readOnly: true },
  ],
  capabilities: { canZero: true, canCompress: true },
  createOptions,
  async open(ctx) {
    const file = ctx.children.get('file')!;
    const name = await fileName(file);
    const image: CowImage = cowImages.get(name) ?? { clusters: new Map(), compressedWrites: [] };
    cowImages.set(name, image);
    image.openedReadOnly = ctx.readOnly;
    let backing = ctx.children.get('backing');
    if (backing === undefined && ctx.givenOptions.backing !== null && image.backing !== undefined) {
      const path = isAbsolute(image.backing.filename) ? image.backing.filename : join(dirname(name), image.backing.filename);
      backing = await ctx.openChild('backing', { driver: image.backing.format, file: { driver: 'file', filename: path } }, true);
    }
    return { name, file, backing, image };
  },
  limits: () => ({ requestAlignment: COW_CLUSTER, clusterSize: COW_CLUSTER }),
  getLength: (s) => s.file.length,
  async read(s, offset, buf) {
    for (let at = 0; at < buf.length; at += COW_CLUSTER) {
      const piece = buf.subarray(at, at + COW_CLUSTER);
      const state = s.image.clusters.get((offset + at) / COW_CLUSTER);
      if (state === 'data') await s.file.read(offset + at, piece);
      else if (state === undefined && s.backing !== undefined && offset + at < s.backing.length) {
        piece.fill(0);
        const inBacking = Math.min(piece.length, s.backing.length - (offset + at));
        await s.backing.read(offset + at, piece.subarray(0, inBacking));
      } else piece.fill(0);
    }
  },
  async write(s, offset, buf, flags) {
    if (flags.compressed) s.image.compressedWrites.push(offset);
    await s.file.write(offset, buf);
    for (let at = 0; at < buf.length; at += COW_CLUSTER) s.image.clusters.set((offset + at) / COW_CLUSTER, 'data');
  },
  async writeZeroes(s, offset, length) {
    for (let at = 0; at < length; at += COW_CLUSTER) s.image.clusters.set((offset + at) / COW_CLUSTER, 'zero');
  },
  async discard(s, offset, length) {
    for (let at = 0; at < length; at += COW_CLUSTER) s.image.clusters.delete((offset + at) / COW_CLUSTER);
  },
  async blockStatus(s, offset, length) {
    const extents: BlockStatusExtent[] = [];
    for (let at = offset; at < offset + length; at += COW_CLUSTER) {
      const state = s.image.clusters.get(at / COW_CLUSTER);
      const extent: BlockStatusExtent =
        state === 'data'
          ? { offset: at, length: COW_CLUSTER, data: true, zero: false, allocated: true, hostOffset: at }
          : { offset: at, length: COW_CLUSTER, data: false, zero: state === 'zero', allocated: state !== undefined };
      const last = extents[extents.length - 1];
      if (last !== undefined && last.data === extent.data && last.zero === extent.zero && last.allocated === extent.allocated) {
        last.length += COW_CLUSTER;
      } else extents.push(extent);
    }
    return extents;
  },
  async describe(s) {
    return {
      filename: s.name,
      dirtyFlag: false,
      formatSpecific: { type: 'cow', data: { 'allocated-clusters': s.image.clusters.size, features: ['cow', 'zero'], geometry: { 'cluster-size': COW_CLUSTER } } },
    };
  },
  async check(s, repair) {
    const result = { ...(s.image.check ?? clean()) };
    if (repair !== 'none' && result.leaks > 0) {
      result.leaksFixed = result.leaks;
      result.messages = [...result.messages, `Repairing ${result.leaks} leaked clusters`];
      s.image.check = { ...result, leaks: 0, leaksFixed: 0, messages: [] };
    }
    return result;
  },
  async create({ options: o, createWith }) {
    if (o.size === undefined) throw new BlockLayerError('cow: size needed');
    await createWith('file', { filename: o.filename, size: o.size });
    const image: CowImage = { clusters: new Map(), compressedWrites: [] };
    if (o.backing_file !== undefined) image.backing = { filename: o.backing_file, format: o.backing_fmt ?? 'raw' };
    cowImages.set(o.filename, image);
  },
});

export const cowPlugin = driverPlugin(cowDriver, { version: '0.1.0' });

/** Whether the qcow2 driver plugin is in the package manifest yet (its cases are skipped until it is). */
export const QCOW2_REGISTERED = defaultManifest().manifest.plugins.some((p) => p.name === 'qcow2' && p.enabled !== false);

/** A layer with the file, raw, null-co and memory drivers, cow, and qcow2 once registered. */
export function toolLayer(): Promise<BlockLayer> {
  return createTestLayer({ plugins: ['file', 'raw', 'null-co', ...(QCOW2_REGISTERED ? ['qcow2'] : []), cowPlugin] });
}

/** A fresh directory, removed after the test. */
export async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-img-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
