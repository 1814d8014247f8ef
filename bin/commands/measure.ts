/** `blocklayer measure [--output=human|json] [-O FMT] [-o OPTIONS] (--size N | -f FMT IMG)`: qemu-img measure. */
import type { Command } from 'commander';
import { formatMeasureHuman, formatMeasureJson, measureImage, type MeasureRequest } from '../../core/image-tools/measure.js';
import { collect, forceShareOption, imageArgument, imageOptsOption, objectOption, type OutputFormat, outputOption, print, runTool } from './image-tool-cli.js';

interface MeasureOptions {
  forceShare?: boolean;
  object: string[];
  f?: string;
  imageOpts?: boolean;
  O?: string;
  o: string[];
  size?: string;
  output: OutputFormat;
}

export function measureCommand(program: Command): void {
  program
    .command('measure')
    .addOption(objectOption())
    .description('show how large an image of a format would be, empty or holding an image (as qemu-img measure)')
    .argument('[filename]', 'the image whose data the new one would hold (opened read-only; its whole backing chain)')
    .option('-f <fmt>', "the image's format (required with a file name: formats are never guessed)")
    .addOption(imageOptsOption())
    .option('-O <output_fmt>', 'the format to measure (default raw)')
    .option('-o <options>', "that format's creation options, key=value,...; repeatable", collect, [])
    .option('--size <size>', 'measure an empty image of this virtual size instead (k, M, G, T, P, E suffixes)')
    .addOption(outputOption())
    .addOption(forceShareOption())
    .action((filename: string | undefined, options: MeasureOptions) =>
      runTool('measure', async (layer) => {
        const request: MeasureRequest = { options: options.o };
        if (options.O !== undefined) request.format = options.O;
        if (options.size !== undefined) request.size = options.size;
        // With --size a file name is refused (measureImage) before it is opened, or its options read.
        if (filename !== undefined) {
          request.source = options.size === undefined ? imageArgument(layer, filename, options.f, { imageOpts: options.imageOpts, forceShare: options.forceShare }) : { filename, format: options.f ?? 'raw' };
        }
        const result = await measureImage(layer, request);
        print(options.output === 'json' ? formatMeasureJson(result) : formatMeasureHuman(result));
      }, { objects: options.object }),
    );
}
