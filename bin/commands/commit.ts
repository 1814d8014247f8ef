/**
 * `blocklayer commit -f FMT [-b BASE] [-d] [-r RATE] [-p] [-q] IMG`:
 * qemu-img commit. An active commit job (block-commit) copies what the
 * image and the images between it and the base hold into the base (by
 * default the image's backing file); once ready it is completed, and the
 * image is emptied (unless -d), so that it reads as the base does. -b
 * implies -d, as in qemu-img: the images between the image and the base
 * no longer read as they did, so the image keeps what it holds. A format
 * that cannot be emptied is left as it is, as qemu-img leaves it.
 */
import type { Command } from 'commander';
import type { BlockLayer } from '../../core/block-layer.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { backingChainNext, findBackingImage } from '../../core/block/backing-chain.js';
import { BlockIoError, errorText } from '../../core/errors.js';
import type { BlockLayerEvent } from '../../core/hooks/block-layer-hooks.js';
import { closeImage, ImageToolError, openImage } from '../../core/image-tools/image-access.js';
import { deferred } from '../../core/util/deferred.js';
import { byteCount, imageArgument, imageOptsOption, objectOption, print, runTool } from './image-tool-cli.js';
import { ProgressBar, showJobProgress } from './progress-bar.js';

interface CommitOptions {
  object: string[];
  f?: string;
  imageOpts?: boolean;
  b?: string;
  d?: boolean;
  r?: string;
  p?: boolean;
  q?: boolean;
}

const JOB_ID = 'commit';
const PROGRESS_INTERVAL_MS = 200;

/** The commit job from start to its end: completed once ready, as qemu-img's run_block_job does. */
async function runCommitJob(layer: BlockLayer, top: BlockNode, base: BlockNode, speed: number, bar: ProgressBar | undefined): Promise<void> {
  const ended = deferred<BlockLayerEvent>();
  layer.hooks.event.tap('blocklayer commit', (event) => {
    if (event.data?.device !== JOB_ID) return;
    if (event.event === 'BLOCK_JOB_READY') void layer.execute('job-complete', { id: JOB_ID }).catch(ended.reject);
    if (event.event === 'BLOCK_JOB_COMPLETED' || event.event === 'BLOCK_JOB_CANCELLED') ended.resolve(event);
  });
  await layer
    .execute('block-commit', { 'job-id': JOB_ID, device: top.nodeName, 'base-node': base.nodeName, ...(speed > 0 ? { speed } : {}) })
    .catch((error: unknown) => {
      throw new ImageToolError(errorText(error));
    });
  const poller = bar === undefined ? undefined : setInterval(() => void showJobProgress(layer, bar, JOB_ID), PROGRESS_INTERVAL_MS);
  try {
    const { event, data = {} } = await ended.promise;
    if (typeof data.error === 'string') throw new ImageToolError(data.error);
    if (event === 'BLOCK_JOB_CANCELLED') throw new ImageToolError('Operation canceled');
  } finally {
    clearInterval(poller);
  }
}

async function commitImage(layer: BlockLayer, filename: string, options: CommitOptions, bar: ProgressBar | undefined): Promise<void> {
  const speed = options.r === undefined ? 0 : byteCount('rate limit', options.r);
  const top = await openImage(layer, imageArgument(layer, filename, options.f, { imageOpts: options.imageOpts }), { readOnly: false });
  try {
    const base = options.b === undefined ? backingChainNext(top) : await findBackingImage(top, options.b);
    if (base === undefined) {
      throw new ImageToolError(options.b === undefined ? 'Image does not have a backing file' : `Did not find '${options.b}' in the backing chain of '${filename}'`);
    }
    await runCommitJob(layer, top, base, speed, bar);
    if (options.d !== true && options.b === undefined) {
      await top.makeEmpty().catch((error: unknown) => {
        if (!(error instanceof BlockIoError && error.errno === 'ENOTSUP')) throw new ImageToolError(errorText(error));
      });
    }
  } finally {
    await closeImage(layer, top);
  }
}

export function commitCommand(program: Command): void {
  program
    .command('commit')
    .addOption(objectOption())
    .description('copy what an image holds into a file down its backing chain, then empty it unless -d (as qemu-img commit)')
    .argument('<filename>', 'the image to commit (opened read-write, with its backing chain)')
    .option('-f <fmt>', "the image's format (required: formats are never guessed)")
    .addOption(imageOptsOption())
    .option('-b <base>', "the backing file to commit into, as the chain names it (default: the image's backing file); implies -d")
    .option('-d', 'keep what the image holds instead of emptying it')
    .option('-r <rate_limit>', 'copy at most this many bytes per second (k, M, G suffixes)')
    .option('-p', 'show a progress bar on stderr')
    .option('-q', 'quiet: no progress bar, nothing printed on success')
    .action((filename: string, options: CommitOptions) =>
      runTool('commit', async (layer) => {
        const bar =
          options.p && !options.q ? await ProgressBar.create({ format: 'commit |{bar}| {percentage}% | {done}/{all} MiB', noTTYOutput: true }, true) : undefined;
        try {
          await commitImage(layer, filename, options, bar);
        } finally {
          bar?.stop();
        }
        if (!options.q) print('Image committed.\n');
      }, { objects: options.object }),
    );
}
