/** `blocklayer amend -f FMT -o OPTIONS [-p] [-q] IMG`: qemu-img amend. */
import type { Command } from 'commander';
import { amendImage } from '../../core/image-tools/amend.js';
import { requireFormat } from '../../core/image-tools/image-access.js';
import { collect, runTool } from './image-tool-cli.js';
import { ProgressBar } from './progress-bar.js';

interface AmendOptions {
  f?: string;
  o: string[];
  p?: boolean;
  q?: boolean;
}

export function amendCommand(program: Command): void {
  program
    .command('amend')
    .description("change an image's format options in place (as qemu-img amend): qcow2's compat, lazy_refcounts, refcount_bits, size")
    .argument('<filename>', 'the image (opened read-write)')
    .option('-f <fmt>', "the image's format (required: formats are never guessed)")
    .option('-o <options>', "options to change, key=value,... with qemu-img's names (e.g. compat=1.1); repeatable", collect, [])
    .option('-p', 'show a progress bar on stderr')
    .option('-q', 'quiet (no progress bar)')
    .addHelpText('after', '\nPrints nothing on success. Exit code 0, or 1 on error.\n')
    .action((filename: string, options: AmendOptions) =>
      runTool('amend', async (layer) => {
        const bar = options.p && !options.q ? await ProgressBar.create({ format: 'amend |{bar}| {percentage}%', noTTYOutput: true }, true) : undefined;
        bar?.update(0, 1);
        try {
          await amendImage(layer, { image: { filename, format: requireFormat(options.f) }, options: options.o });
          bar?.update(1, 1);
        } finally {
          bar?.stop();
        }
      }),
    );
}
