/** `blocklayer dd -f FMT [-O OUTPUT_FMT] [bs=BYTES] [count=N] [skip=N] if=INPUT of=OUTPUT`: qemu-img dd. */
import type { Command } from 'commander';
import { ddImage } from '../../core/image-tools/dd.js';
import { forceShareOption, printError, runTool } from './image-tool-cli.js';

interface DdOptions {
  forceShare?: boolean;
  f?: string;
  O?: string;
}

export function ddCommand(program: Command): void {
  program
    .command('dd')
    .description("copy an image's data from an offset into a new image, with dd's operands (as qemu-img dd)")
    .argument('[operands...]', 'if=INPUT (opened read-only), of=OUTPUT (created), bs=BYTES (default 512), count=N and skip=N blocks')
    .option('-f <fmt>', "the input's format (required: formats are never guessed)")
    .option('-O <output_fmt>', "the output's format (default raw)")
    .addOption(forceShareOption())
    .addHelpText(
      'after',
      '\nAs qemu-img 7.2: with count, the input ends count blocks from its start (not from the skip); a skip past\n' +
        'that end is reported and leaves an empty output. Everything is written as data, zeroes too.\n',
    )
    .action((operands: string[], options: DdOptions) =>
      runTool('dd', async (layer) => {
        const request = {
          operands,
          forceShare: options.forceShare ?? false,
          ...(options.f === undefined ? {} : { format: options.f }),
          ...(options.O === undefined ? {} : { outputFormat: options.O }),
        };
        await ddImage(layer, request, (message) => printError('dd', message));
      }),
    );
}
