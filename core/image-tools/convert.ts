/**
 * qemu-img convert: copies an image (its whole backing chain, flattened)
 * into a new image of any format, sized like the source, skipping what
 * reads as zeroes so that the target stays sparse.
 *
 * - Block status decides first: ranges that read as zeroes are skipped on a
 *   new image (it reads as zeroes already) and written as zeroes otherwise
 *   (-n, or a target with a backing file).
 * - Data is read 2 MiB at a time (one cluster with -c) and scanned: runs of
 *   zeroes at least `sparseSize` long (-S, default 4 KiB) are treated like
 *   zero ranges; -S 0 writes everything.
 * - With -B, the target gets that backing file and only what the source's
 *   top image allocates is copied (the rest is assumed to match the new
 *   backing file, as qemu-img assumes).
 * - With -c, every cluster with data is written compressed, whole and
 *   cluster-aligned (the last one may be short, at the end of the image);
 *   the target driver must be able to (canCompress).
 * - Data requests are cut as qemu-img cuts them, 2 MiB at a time from the
 *   start of each data extent of the source (copy-plan.ts), so a format
 *   allocates its metadata between the same requests (a qcow2 refcount
 *   block after the request that needed it): the same layout.
 * - Requests run `parallel` at a time (-m, default 8); reads go ahead in
 *   parallel, writes are made in image order so that a format allocates
 *   clusters sequentially, unless `outOfOrder` (-W). qemu-img starts an
 *   operation's writes once the one before has completed its own; here
 *   they start once the one before has submitted its last, so a format
 *   allocates in the same order (qcow2 allocates as a write is submitted,
 *   or queues for its metadata lock in turn: the layout is qemu-img's,
 *   which the tests and bench/qcow2 check with qemu-img map), but a write
 *   does not wait for the one before to reach the disk: 1 GiB raw→qcow2
 *   and qcow2→raw conversions took about 8-9% less time so (A/B means).
 *   Within an operation the runs of data are written one after another,
 *   as they may share a cluster. A compressed write allocates only once
 *   compressed, so with -c each one completes before the next starts.
 *   Each request slot reuses one buffer.
 * - With --bitmaps the source's persistent bitmaps are copied too
 *   (convert-bitmaps.ts); with -l, an internal snapshot of the source is
 *   copied instead of its current content (convert-snapshot.ts).
 * - With -C the data is copied by copy offloading (core/block/copy-range.ts:
 *   copy_file_range between the two files, through raw and qcow2), never
 *   read here, so not scanned for zeroes either: what block status calls
 *   data is copied whole. The first request that cannot be offloaded (or
 *   fails) turns it off for the rest of the run, and is copied through a
 *   buffer, as qemu-img does. Each copy completes before the next starts.
 * - With --salvage a read that fails is made again a sector at a time, and
 *   the sectors that still fail are copied as zeroes with a warning each;
 *   a block status that fails is asked again on shorter ranges, down to a
 *   sector taken for data with a warning (convert-sources.ts), as qemu-img
 *   salvages.
 * - With -r the target's writes are throttled as QEMU's bps-write limit
 *   does (core/util/leaky-bucket.ts): the first goes at once, then the
 *   average rate holds.
 * - The target's cache mode (-t) is qemu-img convert's default, unsafe:
 *   flushes are ignored, on the target node and the nodes under it (a
 *   conversion that does not complete leaves no usable image anyway). With
 *   writeback the target is flushed at the end.
 */
import type { BlockLayer } from '../block-layer.js';
import type { BlockNode } from '../block/block-node.js';
import { deferred, type Deferred } from '../util/deferred.js';
import { LeakyBucket } from '../util/leaky-bucket.js';
import type { BitmapStore } from '../bitmap/bitmap-store.js';
import { TOKENS } from '../tokens.js';
import { isAllZero } from './buffers.js';
import { checkSourceBitmaps, checkTargetBitmaps, copyBitmaps } from './convert-bitmaps.js';
import { STATUS_PROBE } from './chain-status.js';
import { ConvertSource } from './convert-sources.js';
import { executeCreate, planCreate } from './create.js';
import { closeImage, type ImageRef, ImageToolError, ioErrorText, openImage } from './image-access.js';
import { loadSnapshot, type SnapshotRef } from './convert-snapshot.js';
import { type CopyOp, dataRuns, planOps } from './copy-plan.js';

export interface ConvertRequest {
  source: ImageRef;
  /** Images copied after `source`, into the same target (qemu-img convert A B … OUT concatenates them: convert-sources.ts). */
  followedBy?: readonly ImageRef[];
  /** The output file and format (-O). */
  target: ImageRef;
  /** -c: write compressed clusters. */
  compress?: boolean;
  /** -o arguments: the target's creation options. */
  options?: readonly string[];
  /** -B: the target's backing file (stored as given). */
  backingFile?: string;
  /** -F: its format. */
  backingFormat?: string;
  /** -n: write into an existing target instead of creating it. */
  skipCreate?: boolean;
  /** -S: the shortest run of zeroes not written (default 4096; 0: write everything), a multiple of 512 up to 16 MiB; not with -C. */
  sparseSize?: number;
  /** -m: requests in flight (default 8). */
  parallel?: number;
  /** -W: let writes complete in any order (default: in image order, as qemu-img). */
  outOfOrder?: boolean;
  /** -t: the target's cache mode (default unsafe, as qemu-img convert: no flushes; writeback flushes at the end). */
  cache?: 'unsafe' | 'writeback';
  /** --bitmaps: copy the source's persistent bitmaps into the target (convert-bitmaps.ts). */
  bitmaps?: boolean;
  /** --skip-broken-bitmaps: leave inconsistent ones out (with a warning) instead of failing. */
  skipBrokenBitmaps?: boolean;
  /** --target-is-zero (with -n): the existing target reads as zeroes, so zeroes need not be written. */
  targetIsZero?: boolean;
  /** -r: the target's writes held to this many bytes per second on average (QEMU's bps-write throttle); 0: no limit. */
  rateLimit?: number;
  /** -l: copy this internal snapshot of the source instead of its current content (convert-snapshot.ts). */
  snapshot?: SnapshotRef;
  /** -C: copy the data by copy offloading, falling back to buffers where it cannot be offloaded. */
  copyRange?: boolean;
  /**
   * --salvage: what cannot be read is read again a sector at a time, and
   * the sectors that still fail are copied as zeroes, each reported to
   * `onWarning` (unless `quiet`), instead of failing the conversion.
   */
  salvage?: boolean;
  /** -q: no salvage warnings. */
  quiet?: boolean;
}

export interface ConvertResult {
  /** The image size: the bytes the conversion went over. */
  bytes: number;
  /** What qemu-img prints as `warning: …` (inconsistent bitmaps skipped). */
  warnings: string[];
}

export type ProgressListener = (done: number, total: number) => void;

/** What --salvage reports as it goes (qemu-img's `warning: …` lines), one at a time: there may be very many. */
export type WarningListener = (text: string) => void;

const BUFFER = 2 * 1024 * 1024;
/** -S at most qemu-img's buffer, 32768 sectors. */
const MAX_SPARSE_SIZE = 16 * 1024 * 1024;
/** The first block status window: a few requests' worth. */
const FIRST_PROBE = 4 * BUFFER;

interface CopyContext {
  source: ConvertSource;
  target: BlockNode;
  /** The target reads as zeroes where nothing is written. */
  zeroInit: boolean;
  compress: boolean;
  sparseSize: number;
  /** Write in image order (allocation stays sequential), reading ahead in parallel. */
  inOrder: boolean;
  /** Buffers of `bufferSize` bytes not in use: at most one per request in flight is ever made. */
  buffers: Buffer[];
  bufferSize: number;
  /** -r: every write waits for its turn here first. */
  throttle: LeakyBucket | undefined;
  /** -C, until a copy could not be offloaded. */
  offload: boolean;
}

/**
 * Statuses of the source as copy operations, asked for in windows that
 * double from FIRST_PROBE up to qemu-img's 1 GiB: copying starts after one
 * short query instead of after the status of the first whole GiB (on a raw
 * file, a pair of lseeks per extent, each a round trip to the thread pool),
 * and the later queries run while the first requests are in flight.
 */
async function* sourceOps(source: ConvertSource, topOnly: boolean): AsyncGenerator<CopyOp> {
  let window = FIRST_PROBE;
  for (let offset = 0; offset < source.length; window = Math.min(window * 2, STATUS_PROBE)) {
    for (const op of await source.status(offset, Math.min(window, source.length - offset), topOnly)) {
      yield op;
      offset = op.offset + op.length;
    }
  }
}

async function writeZeroes(ctx: CopyContext, offset: number, length: number): Promise<void> {
  if (ctx.zeroInit || length === 0) return;
  await ctx.throttle?.admit(length);
  await ctx.target.writeZeroes(offset, length, { mayUnmap: true }).catch((error: unknown) => {
    throw new ImageToolError(`error while writing at byte ${offset}: ${ioErrorText(error)}`);
  });
}

async function write(ctx: CopyContext, offset: number, buf: Buffer): Promise<void> {
  await ctx.throttle?.admit(buf.length);
  await ctx.target.write(offset, buf, ctx.compress ? { compressed: true } : {}).catch((error: unknown) => {
    throw new ImageToolError(`error while writing at byte ${offset}: ${ioErrorText(error)}`);
  });
}

/** An operation with its place in the write order: its writes are submitted after `previous` (unless -W). */
interface Turn {
  op: CopyOp;
  /** Resolves when the operation before has submitted its writes. */
  previous: Promise<void>;
  /** Resolved when this operation has submitted its writes (or failed, or has none). */
  submitted: Deferred;
}

/** Hands out the operations in order, chaining each one's write turn to the one before. */
async function* inTurns(ops: AsyncIterable<CopyOp>): AsyncGenerator<Turn> {
  let previous: Promise<void> = Promise.resolve();
  for await (const op of ops) {
    const submitted = deferred();
    yield { op, previous, submitted };
    previous = submitted.promise;
  }
}

async function copyOp(ctx: CopyContext, turn: Turn): Promise<void> {
  const { op, previous, submitted } = turn;
  if (op.kind === 'skip') {
    // Passes the turn on no earlier than it came, or the next write could overtake the one before.
    if (ctx.inOrder) await previous;
    return;
  }
  if (op.kind === 'zero') {
    if (ctx.inOrder) await previous;
    const zeroed = writeZeroes(ctx, op.offset, op.length);
    submitted.resolve();
    return zeroed;
  }
  if (ctx.offload) {
    if (ctx.inOrder) await previous;
    const offloaded = await offloadData(ctx, op);
    if (offloaded) return;
  }
  // Not zeroed: the read fills it all. Data ops are at most bufferSize long (planOps' maxData).
  const pooled = op.length <= ctx.bufferSize;
  const whole = (pooled ? ctx.buffers.pop() : undefined) ?? Buffer.allocUnsafeSlow(pooled ? ctx.bufferSize : op.length);
  try {
    await copyData(ctx, turn, whole.subarray(0, op.length));
  } finally {
    if (pooled) ctx.buffers.push(whole);
  }
}

/**
 * -C: copies a data operation by offloading, whole; false (and no more
 * offloading) if it could not be, whatever the reason, as qemu-img gives up
 * on it. The turn passes on once the copy is done, so the target allocates
 * in order.
 */
async function offloadData(ctx: CopyContext, op: CopyOp): Promise<boolean> {
  await ctx.throttle?.admit(op.length);
  try {
    await ctx.source.copyTo(op.offset, op.length, ctx.target);
    return true;
  } catch {
    ctx.offload = false;
    return false;
  }
}

/** Reads the data, waits for its turn, then writes it run by run. */
async function copyData(ctx: CopyContext, { op, previous, submitted }: Turn, buf: Buffer): Promise<void> {
  await ctx.source.read(op.offset, buf).catch((error: unknown) => {
    throw new ImageToolError(`error while reading at byte ${op.offset}: ${ioErrorText(error)}`);
  });
  // Scanned before this operation's turn comes, so that the chain of in-order writes does not wait for the scan.
  const skip = ctx.compress && ctx.zeroInit && ctx.sparseSize > 0 && isAllZero(buf);
  const runs = ctx.compress ? [] : dataRuns(buf, op.offset, ctx.sparseSize);
  if (ctx.inOrder) await previous;
  if (ctx.compress) {
    if (!skip) await write(ctx, op.offset, buf);
    return;
  }
  // One run at a time (runs may share a cluster); the next operation's writes may start once the last is submitted.
  let last: Promise<void> = Promise.resolve();
  for (const run of runs) {
    await last;
    last = run.zero ? writeZeroes(ctx, run.offset, run.length) : write(ctx, run.offset, buf.subarray(run.offset - op.offset, run.offset - op.offset + run.length));
  }
  submitted.resolve();
  await last;
}

/** Creates (unless -n) and opens the target; the caller closes it. */
async function prepareTarget(layer: BlockLayer, request: ConvertRequest, source: ConvertSource): Promise<BlockNode> {
  const { target } = request;
  const driver = layer.drivers.get(target.format);
  if (driver === undefined) throw new ImageToolError(`Unknown file format '${target.format}'`);
  if (request.compress && driver.capabilities?.canCompress !== true) {
    throw new ImageToolError('Compression not supported for this file format');
  }
  if (request.backingFile !== undefined && request.backingFormat === undefined) {
    throw new ImageToolError('Use of backing file requires explicit backing format');
  }
  // The creation options are checked first (a format without backing files says so), then the concatenation.
  const plan =
    request.skipCreate === true
      ? undefined
      : await planCreate(layer, {
          filename: target.filename,
          format: target.format,
          size: source.length,
          options: request.options ?? [],
          ...(request.backingFile === undefined ? {} : { backingFile: request.backingFile, backingFormat: request.backingFormat, unsafe: true }),
        });
  if (request.backingFile !== undefined && source.single === undefined) {
    throw new ImageToolError('Having a backing file for the target makes no sense when concatenating multiple input images');
  }
  if (plan !== undefined) await executeCreate(layer, plan, `error while converting ${plan.format}`);
  const node = await openImage(layer, target, { readOnly: false, unmap: true, noFlush: (request.cache ?? 'unsafe') === 'unsafe' });
  if (node.length < source.length) {
    await closeImage(layer, node);
    throw new ImageToolError('output file is smaller than input file');
  }
  return node;
}

/**
 * convert's -t: unsafe (qemu-img's default) and writeback as qemu-img; none
 * (or off) runs as writeback (there is no O_DIRECT here, as for bench);
 * writethrough and directsync are refused.
 */
export function convertCacheMode(mode: string): 'unsafe' | 'writeback' {
  if (mode === 'unsafe' || mode === 'writeback') return mode;
  if (mode === 'none' || mode === 'off') return 'writeback';
  if (mode === 'writethrough' || mode === 'directsync') {
    throw new ImageToolError(`cache mode '${mode}' is not supported: blocklayer accepts unsafe, writeback and none`);
  }
  throw new ImageToolError(`Invalid cache option: ${mode}`);
}

/**
 * convert's -T, the source's cache mode: any of QEMU's names, checked as
 * bdrv_parse_cache_mode checks them. The source is only read, through the
 * host's page cache whatever the mode (no O_DIRECT here), so none changes
 * what is copied.
 */
export function checkSourceCacheMode(mode: string): void {
  if (!['none', 'off', 'directsync', 'writeback', 'unsafe', 'writethrough'].includes(mode)) {
    throw new ImageToolError(`Invalid source cache option: ${mode}`);
  }
}

/** Runs `workers` copies of `work` until `turns` is exhausted; the first error wins once all have stopped. */
async function runPool(turns: AsyncIterator<Turn>, workers: number, work: (turn: Turn) => Promise<void>): Promise<void> {
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed) {
      const next = await turns.next();
      if (next.done === true) return;
      // The turn passes on when this operation is over at the latest (also when it failed), so that no writer waits forever.
      await work(next.value).finally(() => next.value.submitted.resolve());
    }
  };
  const results = await Promise.allSettled(
    Array.from({ length: workers }, () =>
      worker().catch((error: unknown) => {
        failed = true;
        throw error;
      }),
    ),
  );
  const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected !== undefined) throw rejected.reason;
}

export async function convertImage(
  layer: BlockLayer,
  request: ConvertRequest,
  onProgress?: ProgressListener,
  onWarning?: WarningListener,
): Promise<ConvertResult> {
  const parallel = request.parallel ?? 8;
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 16) {
    throw new ImageToolError('Invalid number of coroutines. Allowed number of coroutines is between 1 and 16');
  }
  const sparseSize = request.sparseSize ?? 4096;
  if (!Number.isSafeInteger(sparseSize) || sparseSize < 0 || sparseSize % 512 !== 0 || sparseSize > MAX_SPARSE_SIZE) {
    throw new ImageToolError(
      `Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to ${MAX_SPARSE_SIZE}. Select 0 to disable sparse detection (fully allocates output).`,
    );
  }
  if (request.skipBrokenBitmaps === true && request.bitmaps !== true) throw new ImageToolError('Use of --skip-broken-bitmaps requires --bitmaps');
  if (request.copyRange === true && request.compress === true) throw new ImageToolError('Cannot enable copy offloading when -c is used');
  if (request.copyRange === true && request.sparseSize !== undefined) throw new ImageToolError('Cannot enable copy offloading when -S is used');
  if (request.copyRange === true && request.salvage === true) throw new ImageToolError('Cannot use copy offloading in salvaging mode');
  if (request.targetIsZero === true && request.skipCreate !== true) throw new ImageToolError('--target-is-zero requires use of -n flag');
  // qemu-img 7.2 reports this one and exits 0 without copying; an error here.
  if (request.targetIsZero === true && request.backingFile !== undefined) {
    throw new ImageToolError('Cannot use --target-is-zero when the destination image has a backing file');
  }
  const concatenating = (request.followedBy ?? []).length > 0;
  if (request.bitmaps === true && concatenating) throw new ImageToolError('Copying bitmaps only possible with single source');
  const store = layer.container.get<BitmapStore>(TOKENS.BitmapStore);
  const nodes: BlockNode[] = [];
  try {
    for (const image of [request.source, ...(request.followedBy ?? [])]) nodes.push(await openImage(layer, image, { readOnly: true }));
    const salvage = request.salvage === true ? (warning: string) => (request.quiet === true ? undefined : onWarning?.(warning)) : undefined;
    const source = new ConvertSource(nodes, salvage);
    if (request.snapshot !== undefined) {
      if (concatenating) throw new ImageToolError('No support for concatenating multiple snapshot');
      await loadSnapshot(nodes[0]!, request.snapshot);
    }
    if (request.bitmaps === true) checkSourceBitmaps(store, nodes[0]!, request.skipBrokenBitmaps ?? false);
    const target = await prepareTarget(layer, request, source);
    try {
      if (request.bitmaps === true) checkTargetBitmaps(target);
      const compress = request.compress ?? false;
      const clusterSize = target.limits.clusterSize;
      const align = compress ? clusterSize || 65536 : clusterSize;
      const maxData = compress ? align : Math.max(BUFFER, align);
      const ctx: CopyContext = {
        source,
        target,
        zeroInit: (request.skipCreate !== true || request.targetIsZero === true) && request.backingFile === undefined,
        compress,
        sparseSize,
        inOrder: !(request.outOfOrder ?? false),
        buffers: [],
        // Cut from each data extent (fromExtents), an operation may run up to a cluster past maxData.
        bufferSize: compress ? maxData : maxData + align,
        throttle: (request.rateLimit ?? 0) > 0 ? new LeakyBucket(request.rateLimit!) : undefined,
        offload: request.copyRange === true,
      };
      const total = source.length;
      let done = 0;
      onProgress?.(0, total);
      const ops = planOps(sourceOps(source, request.backingFile !== undefined), {
        align,
        end: total,
        maxData,
        zeroAsData: ctx.sparseSize === 0,
        fromExtents: !compress,
      });
      await runPool(inTurns(ops), parallel, async (turn) => {
        await copyOp(ctx, turn);
        done += turn.op.length;
        onProgress?.(done, total);
      });
      // As qemu-img's last, zero-length compressed write: the format may tidy its file (qcow2 ends it at a whole sector).
      if (compress) {
        await target.finishCompressed().catch((error: unknown) => {
          throw new ImageToolError(`error while finishing compression: ${ioErrorText(error)}`);
        });
      }
      const warnings = request.bitmaps === true ? copyBitmaps(store, nodes[0]!, target, request.skipBrokenBitmaps ?? false) : [];
      await target.flush().catch((error: unknown) => {
        throw new ImageToolError(`error while flushing: ${ioErrorText(error)}`);
      });
      return { bytes: total, warnings };
    } finally {
      await closeImage(layer, target);
    }
  } finally {
    for (const node of nodes) await closeImage(layer, node);
  }
}
