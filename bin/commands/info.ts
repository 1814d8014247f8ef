/** `blocklayer info -f FMT [--output=human|json] [--backing-chain] IMG`: qemu-img info. */
import type { Command } from 'commander';
import { withImage } from '../../core/image-tools/image-access.js';
import { formatInfoHuman, formatInfoJson, imageInfoList } from '../../core/image-tools/info.js';
import { forceShareOption, imageArgument, imageOptsOption, objectOption, type OutputFormat, outputOption, print, runTool } from './image-tool-cli.js';

interface InfoOptions {
  forceShare?: boolean;
  object: string[];
  f?: string;
  imageOpts?: boolean;
  output: OutputFormat;
  backingChain?: boolean;
}

export function infoCommand(program: Command): void {
  program
    .command('info')
    .addOption(objectOption())
    .description("show an image's format, sizes, backing file and format-specific facts (as qemu-img info)")
    .argument('<filename>', 'the image file (opened read-only)')
    .option('-f <fmt>', 'image format (required: formats are never guessed)')
    .addOption(imageOptsOption())
    .addOption(outputOption())
    .option('--backing-chain', 'also show every image of the backing chain')
    .addOption(forceShareOption())
    .action((filename: string, options: InfoOptions) =>
      runTool('info', async (layer) => {
        const chain = options.backingChain ?? false;
        const list = await withImage(layer, imageArgument(layer, filename, options.f, { imageOpts: options.imageOpts, forceShare: options.forceShare }), { readOnly: true }, (node) => imageInfoList(node, chain));
        print(options.output === 'json' ? formatInfoJson(list, chain) : formatInfoHuman(list));
      }, { objects: options.object }),
    );
}
