/** `blocklayer map -f FMT [--output=human|json] [--start-offset=N] [--max-length=N] IMG`: qemu-img map. */
import type { Command } from 'commander';
import { withImage } from '../../core/image-tools/image-access.js';
import { formatMapHuman, formatMapJson, mapImage, type MapOptions } from '../../core/image-tools/map.js';
import { byteCount, forceShareOption, imageArgument, imageOptsOption, objectOption, type OutputFormat, outputOption, print, printError, runTool } from './image-tool-cli.js';

interface MapCliOptions {
  forceShare?: boolean;
  object: string[];
  f?: string;
  imageOpts?: boolean;
  output: OutputFormat;
  startOffset?: string;
  maxLength?: string;
}

export function mapCommand(program: Command): void {
  program
    .command('map')
    .addOption(objectOption())
    .description('show where the data of an image comes from, through its backing chain (as qemu-img map)')
    .argument('<filename>', 'the image file (opened read-only)')
    .option('-f <fmt>', 'image format (required: formats are never guessed)')
    .addOption(imageOptsOption())
    .addOption(outputOption())
    .option('--start-offset <offset>', 'first byte to map (k, M, G suffixes allowed)')
    .option('--max-length <length>', 'bytes to map at most')
    .addOption(forceShareOption())
    .addHelpText(
      'after',
      '\nJSON: [{ "start", "length", "depth", "present", "zero", "data"[, "offset"] }, ...], adjacent entries merged.\n' +
        'Human: the ranges holding data, with their offset in the file holding them.\n',
    )
    .action((filename: string, options: MapCliOptions) =>
      runTool('map', async (layer) => {
        const image = imageArgument(layer, filename, options.f, { imageOpts: options.imageOpts, forceShare: options.forceShare });
        const range: MapOptions = {};
        if (options.startOffset !== undefined) range.startOffset = byteCount('start offset', options.startOffset);
        if (options.maxLength !== undefined) range.maxLength = byteCount('max length', options.maxLength);
        const entries = await withImage(layer, image, { readOnly: true }, (node) => mapImage(node, range));
        if (options.output === 'json') {
          print(formatMapJson(entries));
          return 0;
        }
        const human = formatMapHuman(entries);
        print(human.text);
        if (human.error === undefined) return 0;
        printError('map', human.error);
        return 1;
      }, { objects: options.object }),
    );
}
