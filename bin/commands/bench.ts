/** `blocklayer bench -f FMT [-c N] [-d N] [-o OFFSET] [-s SIZE] [-S STEP] [-w] ... IMG`: qemu-img bench. */
import type { Command } from 'commander';
import {
  BENCH_DEFAULTS,
  type BenchOptions,
  benchHeader,
  benchSummary,
  checkAioMode,
  checkBenchOptions,
  checkCacheMode,
  runBench,
} from '../../core/image-tools/bench.js';
import { ImageToolError, withImage } from '../../core/image-tools/image-access.js';
import { byteCount, forceShareOption, imageArgument, imageOptsOption, parseUnsigned, print, runTool } from './image-tool-cli.js';

interface BenchCliOptions {
  forceShare?: boolean;
  c?: string;
  d?: string;
  f?: string;
  imageOpts?: boolean;
  flushInterval?: string;
  i?: string;
  n?: boolean;
  drain: boolean;
  o?: string;
  pattern?: string;
  q?: boolean;
  s?: string;
  S?: string;
  t?: string;
  w?: boolean;
}

const INT_MAX = 2n ** 31n - 1n;

function benchOptions(options: BenchCliOptions): BenchOptions {
  const size = (text: string | undefined, fallback: number, what: string): number => (text === undefined ? fallback : byteCount(what, text, 0n, INT_MAX));
  const depth = parseUnsigned(options.d, BENCH_DEFAULTS.depth, 'Invalid queue depth specified');
  if (depth < 1) throw new ImageToolError('Invalid queue depth specified');
  return {
    count: parseUnsigned(options.c, BENCH_DEFAULTS.count, 'Invalid request count specified'),
    depth,
    offset: options.o === undefined ? 0 : byteCount('offset', options.o),
    bufferSize: size(options.s, BENCH_DEFAULTS.bufferSize, 'buffer size'),
    step: size(options.S, 0, 'step_size'),
    write: options.w ?? false,
    pattern: parseUnsigned(options.pattern, 0, 'Invalid pattern byte specified', 0xff),
    flushInterval: parseUnsigned(options.flushInterval, 0, 'Invalid flush interval specified'),
    drainOnFlush: options.drain,
  };
}

export function benchCommand(program: Command): void {
  program
    .command('bench')
    .description('run a simple I/O benchmark on an image (as qemu-img bench)')
    .argument('<filename>', 'the image file (opened read-only, read-write with -w)')
    .option('-c <count>', 'number of requests', String(BENCH_DEFAULTS.count))
    .option('-d <depth>', 'requests in flight', String(BENCH_DEFAULTS.depth))
    .option('-f <fmt>', 'image format (required: formats are never guessed)')
    .addOption(imageOptsOption())
    .option('--flush-interval <n>', 'flush every N requests (write tests; at least the depth)')
    .option('-i <aio>', 'AIO engine: only threads (the libuv thread pool)', 'threads')
    .option('-n', 'native AIO: refused, as -i native')
    .option('--no-drain', 'flush without waiting for the requests in flight')
    .option('-o <offset>', 'offset of the first request', '0')
    .option('--pattern <pattern>', 'byte written by write tests', '0')
    .option('-q', 'quiet: only the result line')
    .option('-s <buffer_size>', 'bytes per request', String(BENCH_DEFAULTS.bufferSize))
    .option('-S <step_size>', 'offset step between requests (default: the buffer size); offsets wrap at the image size')
    .option('-t <cache>', 'cache mode: writeback (default) or none, which runs as writeback (no O_DIRECT)', 'writeback')
    .option('-w', 'write test (default: read)')
    .addOption(forceShareOption())
    .action((filename: string, options: BenchCliOptions) =>
      runTool('bench', async (layer) => {
        const bench = benchOptions(options);
        const image = imageArgument(layer, filename, options.f, { imageOpts: options.imageOpts, forceShare: options.forceShare });
        checkAioMode(options.n ? 'native' : (options.i ?? 'threads'));
        checkCacheMode(options.t ?? 'writeback');
        checkBenchOptions(bench);
        const { seconds } = await withImage(layer, image, { readOnly: !bench.write }, async (node) => {
          if (!options.q) print(benchHeader(bench).map((line) => `${line}\n`).join(''));
          return runBench(node, bench);
        });
        print(`${benchSummary(seconds)}\n`);
      }),
    );
}
