/**
 * Shared set-up for the backup tests: a layer with the backup plugin, a
 * memory source (discard=unmap) behind the device `virtio0`, a memory
 * target, an event log, and a record of every write-type request that
 * reaches the source and the target nodes themselves (below the
 * copy-before-write filter), so a test knows exactly what the guest's I/O
 * and the copy engine did.
 */
import { setImmediate as tick } from 'node:timers/promises';
import type { BlockBackend } from '../../../core/block/block-backend.js';
import type { BlockNode } from '../../../core/block/block-node.js';
import type { WriteKind } from '../../../core/block/request.js';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { BlockLayerEvent } from '../../../core/hooks/block-layer-hooks.js';
import type { JobManager } from '../../../core/job/job-manager.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';
import { mulberry32 } from '../../helpers/prng.js';

export const CLUSTER = 64 * 1024;
export const JOB = 'j';

export interface RecordedRequest {
  kind: WriteKind;
  offset: number;
  bytes: number;
  /** Copy-before-write intercepted the request (a backup's tap was on the node when it arrived). */
  intercepted: boolean;
}

export interface BackupFixture {
  layer: BlockLayer;
  src: BlockNode;
  tgt: BlockNode;
  dev: BlockBackend;
  jobs: JobManager;
  events: BlockLayerEvent[];
  /** Write-type requests that reached `src` (recorded before copy-before-write sees them). */
  srcRequests: RecordedRequest[];
  /** Write-type requests that reached `tgt`, once `recordTarget()` was called. */
  tgtRequests: RecordedRequest[];
  recordTarget(): void;
  /** Resolves with the first event named (one of) `name` about the job (seen before or after the call). */
  event(name: string | readonly string[], timeoutMs?: number): Promise<BlockLayerEvent>;
  /** Cancels whatever job is left, closes the layer. */
  dispose(): Promise<void>;
}

/** `extraPlugins`: more plugins by name (e.g. dirty-bitmap for its commands). */
export async function backupFixture(size: number, extraPlugins: readonly string[] = []): Promise<BackupFixture> {
  const layer = await createTestLayer({ plugins: ['backup', 'job-commands', 'transaction', ...extraPlugins] });
  const src = await layer.graph.add({ driver: 'memory', 'node-name': 'src', size, discard: 'unmap' });
  const tgt = await layer.graph.add({ driver: 'memory', 'node-name': 'tgt', size });
  const dev = layer.graph.attachBackend('virtio0', src);
  const jobs = layer.container.get<JobManager>(TOKENS.JobManager);
  const events: BlockLayerEvent[] = [];
  const waiters: (() => void)[] = [];
  layer.hooks.event.tap('backup-fixture', (event) => {
    events.push(event);
    for (const wake of waiters.splice(0)) wake();
  });
  const srcRequests: RecordedRequest[] = [];
  const tgtRequests: RecordedRequest[] = [];
  const record = (into: RecordedRequest[]) => async (r: { node: BlockNode; kind: WriteKind; offset: number; bytes: number }) => {
    const intercepted = r.node.hooks.beforeWrite.taps.some((tap) => tap.name.startsWith('backup '));
    into.push({ kind: r.kind, offset: r.offset, bytes: r.bytes, intercepted });
    return undefined;
  };
  // Tapped before any job exists, so it runs before the copy-before-write tap.
  src.hooks.beforeWrite.tapPromise('backup-fixture', record(srcRequests));
  const matching = (names: readonly string[]) =>
    events.find((e) => names.includes(e.event) && (e.data?.device === JOB || e.data?.id === JOB));
  return {
    layer,
    src,
    tgt,
    dev,
    jobs,
    events,
    srcRequests,
    tgtRequests,
    recordTarget: () => tgt.hooks.beforeWrite.tapPromise('backup-fixture', record(tgtRequests)),
    async event(name, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = matching(typeof name === 'string' ? [name] : name);
        if (found !== undefined) return found;
        if (Date.now() > deadline) {
          throw new Error(`no ${name} within ${timeoutMs} ms; events: ${events.map((e) => e.event).join(', ')}`);
        }
        await Promise.race([new Promise<void>((resolve) => waiters.push(resolve)), delay(50)]);
      }
    },
    async dispose() {
      await layer.lifecycle.requestShutdown('test over');
      await layer.close();
    },
  };
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Lets the event loop turn `n` times (background copies make progress). */
export async function ticks(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await tick();
}

/** Random bytes, none of them zero, that `randomBytes` takes its slices from. */
const POOL = ((): Buffer => {
  const next = mulberry32(0x600dcafe);
  const pool = Buffer.allocUnsafe(4 << 20);
  for (let i = 0; i < pool.length; i += 4) pool.writeUInt32LE((next() | 0x01010101) >>> 0, i);
  return pool;
})();

/** `length` (at most 3 MiB) pseudo-random bytes, none of them zero, picked by `seed`. */
export function randomBytes(seed: number, length: number): Buffer {
  if (length > 3 << 20) throw new Error('randomBytes: at most 3 MiB');
  const at = (mulberry32(seed)() % (POOL.length - length + 1)) >>> 0;
  return Buffer.from(POOL.subarray(at, at + length));
}

export async function readAll(node: BlockNode | BlockBackend, offset = 0, length = node.length - offset): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  if (length > 0) await node.read(offset, buf);
  return buf;
}

/** Per cluster: block status says it reads as zeroes (no data stored there). */
export async function zeroClusters(node: BlockNode): Promise<boolean[]> {
  const count = Math.ceil(node.length / CLUSTER);
  const zero: boolean[] = new Array<boolean>(count).fill(true);
  for (const extent of await node.blockStatus(0, node.length)) {
    if (extent.zero) continue;
    const first = Math.floor(extent.offset / CLUSTER);
    const end = Math.ceil((extent.offset + extent.length) / CLUSTER);
    for (let c = first; c < end; c++) zero[c] = false;
  }
  return zero;
}

/** The clusters `[offset, offset + bytes)` touches. */
export function clustersOf(offset: number, bytes: number): number[] {
  const out: number[] = [];
  for (let c = Math.floor(offset / CLUSTER); c < Math.ceil((offset + bytes) / CLUSTER); c++) out.push(c);
  return out;
}

/** How many requests wrote (data or zeroes) to each cluster. */
export function writesPerCluster(requests: readonly RecordedRequest[]): Map<number, number> {
  const counts = new Map<number, number>();
  for (const r of requests) {
    if (r.kind === 'truncate') continue;
    for (const c of clustersOf(r.offset, r.bytes)) counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  return counts;
}

/** Bytes of the given clusters on a disk of `size` bytes (the last cluster may be short). */
export function clusterBytes(clusters: Iterable<number>, size: number): number {
  let bytes = 0;
  for (const c of clusters) bytes += Math.min(CLUSTER, size - c * CLUSTER);
  return bytes;
}

/**
 * Random initial content: each cluster is left unwritten, filled, or
 * written over a random part (the rest of it reading as zeroes).
 */
export async function fillRandom(node: BlockNode, seed: number, density: number): Promise<void> {
  const next = mulberry32(seed);
  const clusters = Math.ceil(node.length / CLUSTER);
  for (let c = 0; c < clusters; c++) {
    const roll = next() % 100;
    if (roll >= density) continue;
    const clusterLength = Math.min(CLUSTER, node.length - c * CLUSTER);
    let start = 0;
    let length = clusterLength;
    if (roll % 3 === 0) {
      start = next() % clusterLength;
      length = 1 + (next() % (clusterLength - start));
    }
    await node.write(c * CLUSTER + start, randomBytes(next(), length));
  }
}

/** Job status, or undefined once the job is gone. */
export function jobStatus(fixture: BackupFixture): string | undefined {
  return fixture.jobs.find(JOB)?.status;
}
