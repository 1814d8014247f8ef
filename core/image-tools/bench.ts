/**
 * qemu-img bench: `count` reads (or writes) of `bufferSize` bytes through a
 * node, `depth` in flight, at offsets starting at `offset` and stepping by
 * `step`, wrapping at the image size (a request that then runs past the end
 * fails, as in qemu-img). Writes carry the `pattern` byte. With a flush
 * interval, a flush is sent each time the number of requests still to be
 * issued is a multiple of it: after the requests in flight have completed
 * (drain, the default) or alongside them (`drainOnFlush: false`).
 */
import type { BlockNode } from '../block/block-node.js';
import { ImageToolError, ioErrorText } from './image-access.js';

export interface BenchOptions {
  /** -c (default 75000). */
  count: number;
  /** -d (default 64). */
  depth: number;
  /** -o (default 0). */
  offset: number;
  /** -s (default 4096). */
  bufferSize: number;
  /** -S (default: the buffer size). */
  step: number;
  /** -w */
  write: boolean;
  /** --pattern (default 0). */
  pattern: number;
  /** --flush-interval (0: none). */
  flushInterval: number;
  /** Not --no-drain. */
  drainOnFlush: boolean;
}

export const BENCH_DEFAULTS: BenchOptions = {
  count: 75000,
  depth: 64,
  offset: 0,
  bufferSize: 4096,
  step: 0,
  write: false,
  pattern: 0,
  flushInterval: 0,
  drainOnFlush: true,
};

/** The combinations qemu-img refuses, with its messages. */
export function checkBenchOptions(options: BenchOptions): void {
  if (options.flushInterval > 0 && !options.write) {
    throw new ImageToolError('--flush-interval is only available in write tests');
  }
  if (options.flushInterval > 0 && options.flushInterval < options.depth) {
    throw new ImageToolError("Flush interval can't be smaller than depth");
  }
}

/** -i: only `threads`, the one I/O engine blocklayer has (a thread pool). */
export function checkAioMode(mode: string): void {
  if (mode === 'threads') return;
  if (mode === 'native' || mode === 'io_uring') {
    throw new ImageToolError(`aio=${mode} is not supported: blocklayer does its I/O on a thread pool (-i threads)`);
  }
  throw new ImageToolError(`Invalid aio option: ${mode}`);
}

/**
 * -t: writeback (the default) and none. QEMU's `none` is writeback too as
 * far as the image is concerned (a write completes before it is on stable
 * storage; a flush makes it stable) but bypasses the host page cache with
 * O_DIRECT. blocklayer always goes through the page cache (cache.direct=on
 * is refused), so `none` runs exactly as `writeback`. writethrough,
 * directsync and unsafe change the flush semantics and are refused.
 */
export function checkCacheMode(mode: string): void {
  if (mode === 'writeback' || mode === 'none') return;
  if (['writethrough', 'directsync', 'unsafe'].includes(mode)) {
    throw new ImageToolError(`cache mode '${mode}' is not supported: blocklayer accepts writeback and none`);
  }
  throw new ImageToolError(`Invalid cache option: ${mode}`);
}

/** The lines qemu-img prints before running (unless -q). */
export function benchHeader(options: BenchOptions): string[] {
  const step = options.step || options.bufferSize;
  const lines = [
    `Sending ${options.count} ${options.write ? 'write' : 'read'} requests, ${options.bufferSize} bytes each, ` +
      `${options.depth} in parallel (starting at offset ${options.offset}, step size ${step})`,
  ];
  if (options.flushInterval > 0) lines.push(`Sending flush every ${options.flushInterval} requests`);
  return lines;
}

/** `Run completed in 1.234 seconds.` */
export function benchSummary(seconds: number): string {
  return `Run completed in ${seconds.toFixed(3)} seconds.`;
}

/** Runs the benchmark on `node` (opened read-write for writes); resolves with the elapsed seconds. */
export async function runBench(node: BlockNode, options: BenchOptions): Promise<{ seconds: number }> {
  checkBenchOptions(options);
  const size = node.length;
  const step = options.step || options.bufferSize;
  const buffers = Array.from({ length: Math.min(options.depth, options.count) }, () =>
    Buffer.alloc(options.bufferSize, options.write ? options.pattern : 0),
  );
  const start = performance.now();
  await new Promise<void>((resolve, reject) => {
    let issued = 0;
    let inFlight = 0;
    let completed = 0;
    let paused = false;
    let flushes = 0;
    let failed = false;
    const fail = (message: string): void => {
      if (failed) return;
      failed = true;
      reject(new ImageToolError(message));
    };
    const finishIfDone = (): void => {
      if (!failed && completed === options.count && inFlight === 0 && flushes === 0) resolve();
    };
    const flush = (then: () => void): void => {
      flushes++;
      node.flush().then(
        () => {
          flushes--;
          then();
        },
        () => fail('Failed flush request'),
      );
    };
    let nextOffset = options.offset;
    const pump = (): void => {
      while (!failed && !paused && issued < options.count && inFlight < buffers.length) {
        const offset = nextOffset;
        nextOffset = size > 0 ? (nextOffset + step) % size : 0;
        const buf = buffers.pop()!;
        issued++;
        inFlight++;
        const request = options.write ? node.write(offset, buf) : node.read(offset, buf);
        request.then(
          () => {
            buffers.push(buf);
            inFlight--;
            completed++;
            afterCompletion();
          },
          (error: unknown) => fail(`Failed request: ${ioErrorText(error)}`),
        );
      }
      finishIfDone();
    };
    const afterCompletion = (): void => {
      const remaining = options.count - issued;
      if (options.flushInterval > 0 && remaining % options.flushInterval === 0) {
        if (!options.drainOnFlush) {
          flush(finishIfDone);
        } else {
          paused = true;
          if (inFlight > 0) return;
          flush(() => {
            paused = false;
            pump();
          });
          return;
        }
      }
      pump();
    };
    pump();
  });
  return { seconds: (performance.now() - start) / 1000 };
}
