/** `blocklayer convert (-f FMT | --image-opts) [-O FMT | --target-image-opts] [-c] [-p] [-o OPTIONS] [-B BACKING -F FMT] [-n] [-S N] [-C] [--salvage] [-m N] [-r RATE] [-l SNAPSHOT] [--bitmaps [--skip-broken-bitmaps]] SRC [SRC2 ...] DST`: qemu-img convert. */
import type { Command } from 'commander';
import { checkSourceCacheMode, convertCacheMode, convertImage, type ConvertRequest } from '../../core/image-tools/convert.js';
import { convertSnapshotParam } from '../../core/image-tools/convert-snapshot.js';
import { ImageToolError, imageOptsRef } from '../../core/image-tools/image-access.js';
import { byteCount, collect, forceShareOption, imageArgument, imageOptsOption, objectOption, parseUnsigned, printError, runTool } from './image-tool-cli.js';
import { ProgressBar } from './progress-bar.js';

interface ConvertOptions {
  forceShare?: boolean;
  object: string[];
  f?: string;
  imageOpts?: boolean;
  targetImageOpts?: boolean;
  O?: string;
  c?: boolean;
  p?: boolean;
  q?: boolean;
  n?: boolean;
  o: string[];
  B?: string;
  F?: string;
  S?: string;
  m?: string;
  W?: boolean;
  t?: string;
  bitmaps?: boolean;
  skipBrokenBitmaps?: boolean;
  l?: string;
  r?: string;
  T?: string;
  targetIsZero?: boolean;
  C?: boolean;
  salvage?: boolean;
}

export function convertCommand(program: Command): void {
  program
    .command('convert')
    .addOption(objectOption())
    .description('copy an image, flattening its backing chain, into a new image of any format (as qemu-img convert)')
    .argument('<filenames...>', 'the source image (opened read-only; several are copied one after another, each at a whole 512-byte sector), then the image to create (an existing file is overwritten)')
    .option('-f <fmt>', "the source's format (required: formats are never guessed)")
    .addOption(imageOptsOption('--image-opts', 'the source arguments'))
    .option('-O <output_fmt>', "the target's format (default raw)")
    .addOption(imageOptsOption('--target-image-opts', 'the target argument (with -n; not with -O)'))
    .option('-c', 'write compressed clusters (the target format must support it, e.g. qcow2)')
    .option('-p', 'show a progress bar on stderr')
    .option('-q', 'quiet (no progress bar)')
    .option('-n', 'write into the existing target instead of creating it')
    .option('-o <options>', "the target's creation options, key=value,...; repeatable", collect, [])
    .option('-r <rate_limit>', "write the target at most this many bytes per second on average (k, M, G suffixes)")
    .option('-l <snapshot_param>', "copy an internal snapshot of the source: snapshot.id=ID,snapshot.name=NAME (either or both), or an id or a name")
    .option('-B <backing_file>', 'create the target with this backing file and copy only what the source itself allocates')
    .option('-F <backing_fmt>', 'format of the -B backing file (required with -B)')
    .option('-S <sparse_size>', 'shortest run of zeroes left unwritten (default 4k; 0: write everything)')
    .option('-m <num_coroutines>', 'requests in flight, 1 to 16 (default 8)')
    .option('-C', 'copy offloading: the data is copied by the storage (copy_file_range between files), not read and written here')
    .option('-W', 'let writes complete in any order (default: in image order, so clusters are allocated sequentially)')
    .option('-t <cache>', "the target's cache mode: unsafe (default: no flushes), writeback (flushed at the end), or none (runs as writeback)")
    .option('-T <src_cache>', "the source's cache mode (any of QEMU's; the source is read through the page cache whatever it says)")
    .option('--target-is-zero', 'with -n: the existing target reads as zeroes already, so zeroes are not written')
    .option('--salvage', 'copy what cannot be read as zeroes, with a warning for each 512-byte sector, instead of failing')
    .option('--bitmaps', "copy the source's persistent dirty bitmaps into the target (both qcow2 v3)")
    .option('--skip-broken-bitmaps', 'with --bitmaps: leave inconsistent bitmaps out, with a warning, instead of failing')
    .addOption(forceShareOption())
    .action((filenames: string[], options: ConvertOptions) =>
      runTool('convert', async (layer) => {
        if (filenames.length < 2) throw new ImageToolError('Must specify image file name');
        if (options.targetImageOpts === true && options.n !== true) throw new ImageToolError('--target-image-opts requires use of -n flag');
        const [source, ...rest] = filenames.slice(0, -1).map((filename) => imageArgument(layer, filename, options.f, { imageOpts: options.imageOpts, forceShare: options.forceShare }));
        const targetName = filenames[filenames.length - 1]!;
        const request: ConvertRequest = {
          source: source!,
          target: options.targetImageOpts === true ? imageOptsRef(layer, targetName, options.O) : { filename: targetName, format: options.O ?? 'raw' },
          compress: options.c ?? false,
          options: options.o,
          skipCreate: options.n ?? false,
          parallel: parseUnsigned(options.m, 8, 'Invalid number of coroutines. Allowed number of coroutines is between 1 and 16'),
          outOfOrder: options.W ?? false,
          cache: convertCacheMode(options.t ?? 'unsafe'),
          bitmaps: options.bitmaps ?? false,
          skipBrokenBitmaps: options.skipBrokenBitmaps ?? false,
        };
        if (options.S !== undefined) request.sparseSize = byteCount('buffer size for sparse output', options.S);
        if (options.C === true) request.copyRange = true;
        if (options.salvage === true) request.salvage = true;
        if (options.q === true) request.quiet = true;
        if (rest.length > 0) request.followedBy = rest;
        if (options.T !== undefined) checkSourceCacheMode(options.T);
        if (options.targetIsZero === true) request.targetIsZero = true;
        if (options.r !== undefined) request.rateLimit = byteCount('rate limit', options.r);
        if (options.l !== undefined) request.snapshot = convertSnapshotParam(options.l);
        if (options.B !== undefined) request.backingFile = options.B;
        if (options.F !== undefined) request.backingFormat = options.F;
        const bar =
          options.p && !options.q
            ? await ProgressBar.create({ format: 'convert |{bar}| {percentage}% | {done}/{all} MiB', noTTYOutput: true }, true)
            : undefined;
        try {
          const { warnings } = await convertImage(
            layer,
            request,
            bar === undefined ? undefined : (done, total) => bar.update(done, total),
            (warning) => printError('convert', `warning: ${warning}`),
          );
          for (const warning of warnings) printError('convert', `warning: ${warning}`);
        } finally {
          bar?.stop();
        }
      }, { objects: options.object }),
    );
}
