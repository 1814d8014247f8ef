/** `blocklayer compare -f FMT -F FMT [-s] [-q] IMG1 IMG2`: qemu-img compare. */
import type { Command } from 'commander';
import { compareImages } from '../../core/image-tools/compare.js';
import { withImage } from '../../core/image-tools/image-access.js';
import { forceShareOption, imageArgument, imageOptsOption, objectOption, print, printError, runTool } from './image-tool-cli.js';

interface CompareOptions {
  forceShare?: boolean;
  object: string[];
  f?: string;
  F?: string;
  imageOpts?: boolean;
  s?: boolean;
  q?: boolean;
}

/** Open errors and the like exit with 2 (1 means the images differ). */
const ERROR_EXIT = 2;

export function compareCommand(program: Command): void {
  program
    .command('compare')
    .addOption(objectOption())
    .description('check whether two images have the same contents (as qemu-img compare)')
    .argument('<filename1>', 'the first image (opened read-only)')
    .argument('<filename2>', 'the second image (opened read-only)')
    .option('-f <fmt>', "the first image's format (required)")
    .option('-F <fmt>', "the second image's format (required)")
    .addOption(imageOptsOption('--image-opts', 'both image arguments'))
    .option('-s', 'strict: sizes and allocation must match too')
    .option('-q', 'quiet: print nothing, only set the exit code')
    .addOption(forceShareOption())
    .addHelpText(
      'after',
      '\nExit codes: 0 identical, 1 different ("Content mismatch at offset N!"), 2 an image could not be opened\n' +
        '(or another error), 3 block status failed, 4 a read failed.\n' +
        'Images of different sizes are identical when the larger one is all zeroes past the smaller one (not with -s).\n',
    )
    .action((filename1: string, filename2: string, options: CompareOptions) =>
      runTool(
        'compare',
        async (layer) => {
          const image1 = imageArgument(layer, filename1, options.f, { imageOpts: options.imageOpts, flag: '-f', exitCode: ERROR_EXIT, forceShare: options.forceShare });
          const image2 = imageArgument(layer, filename2, options.F, { imageOpts: options.imageOpts, flag: '-F', exitCode: ERROR_EXIT, forceShare: options.forceShare });
          const open = { readOnly: true, exitCode: ERROR_EXIT };
          const outcome = await withImage(layer, image1, open, (a) =>
            withImage(layer, image2, open, (b) =>
              compareImages({ node: a, filename: filename1 }, { node: b, filename: filename2 }, { strict: options.s ?? false }),
            ),
          );
          if (!options.q) print(outcome.lines.map((line) => `${line}\n`).join(''));
          if (outcome.error !== undefined) printError('compare', outcome.error);
          return outcome.exitCode;
        },
        { failureCode: ERROR_EXIT, objects: options.object },
      ),
    );
}
