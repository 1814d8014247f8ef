/** `blocklayer resize -f FMT [--shrink] [--preallocation=MODE] [-q] IMG [+|-]SIZE`: qemu-img resize. */
import type { Command } from 'commander';
import { resizeImage } from '../../core/image-tools/resize.js';
import { imageArgument, imageOptsOption, objectOption, print, runTool } from './image-tool-cli.js';

interface ResizeOptions {
  object: string[];
  f?: string;
  imageOpts?: boolean;
  shrink?: boolean;
  preallocation?: string;
  q?: boolean;
}

export function resizeCommand(program: Command): void {
  program
    .command('resize')
    .addOption(objectOption())
    .description("set an image's virtual size, absolute or +/- the current one (as qemu-img resize)")
    .argument('<filename>', 'the image (opened read-write)')
    .argument('<size>', 'the new size (k, M, G, T, P, E suffixes), or +SIZE / -SIZE relative to the current one (-SIZE after --)')
    .option('-f <fmt>', "the image's format (required: formats are never guessed)")
    .addOption(imageOptsOption())
    .option('--shrink', 'allow a smaller size: what lies past the new end is deleted')
    .option('--preallocation <mode>', 'how the growth is allocated: off, metadata (qcow2), falloc or full', 'off')
    .option('-q', 'quiet: print nothing on success')
    // A size to take away reads as an option: as qemu-img, the last argument is the size whatever it looks like.
    .allowUnknownOption()
    .action((filename: string, size: string, options: ResizeOptions) =>
      runTool('resize', async (layer) => {
        await resizeImage(layer, { image: imageArgument(layer, filename, options.f, { imageOpts: options.imageOpts }), size, shrink: options.shrink ?? false, preallocation: options.preallocation ?? 'off' });
        if (!options.q) print('Image resized.\n');
      }, { objects: options.object }),
    );
}
