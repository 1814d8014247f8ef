/** `blocklayer amend -f FMT -o OPTIONS [-p] [-q] IMG`: qemu-img amend. */
import type { Command } from 'commander';
import { amendImage } from '../../core/image-tools/amend.js';
import { ImageToolError, requireFormat } from '../../core/image-tools/image-access.js';
import { amendOptionHelp, asksForHelp } from '../../core/image-tools/option-help.js';
import { collect, imageArgument, imageOptsOption, objectOption, print, runTool } from './image-tool-cli.js';
import { ProgressBar } from './progress-bar.js';

interface AmendOptions {
  object: string[];
  f?: string;
  imageOpts?: boolean;
  o: string[];
  p?: boolean;
  q?: boolean;
}

export function amendCommand(program: Command): void {
  program
    .command('amend')
    .addOption(objectOption())
    .description("change an image's format options in place (as qemu-img amend): qcow2's compat, lazy_refcounts, refcount_bits, size")
    .argument('[filename]', 'the image (opened read-write); not needed with -o help')
    .option('-f <fmt>', "the image's format (required: formats are never guessed)")
    .addOption(imageOptsOption())
    .option('-o <options>', "options to change, key=value,... with qemu-img's names (e.g. compat=1.1); repeatable; help lists them", collect, [])
    .option('-p', 'show a progress bar on stderr')
    .option('-q', 'quiet (no progress bar)')
    .addHelpText('after', '\nPrints nothing on success. Exit code 0, or 1 on error.\n')
    .action((filename: string | undefined, options: AmendOptions) =>
      runTool('amend', async (layer) => {
        if (asksForHelp(options.o)) {
          // With --image-opts the format is the image's driver, as qemu-img opens the image to learn it.
          const format = options.imageOpts === true && filename !== undefined ? imageArgument(layer, filename, options.f, { imageOpts: true }).format : requireFormat(options.f);
          print(amendOptionHelp(layer, format));
          return;
        }
        // qemu-img asks for the options before the file name.
        if (filename === undefined && options.o.some((o) => o !== '')) throw new ImageToolError('Expecting one image file name');
        const bar = options.p && !options.q ? await ProgressBar.create({ format: 'amend |{bar}| {percentage}%', noTTYOutput: true }, true) : undefined;
        bar?.update(0, 1);
        try {
          await amendImage(layer, { image: imageArgument(layer, filename ?? '', options.f, { imageOpts: options.imageOpts }), options: options.o });
          bar?.update(1, 1);
        } finally {
          bar?.stop();
        }
      }, { objects: options.object }),
    );
}
