/**
 * `blocklayer bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)...
 * [-b SOURCE_FILE -F SOURCE_FMT] [-g GRANULARITY] -f FMT IMG BITMAP`: qemu-img bitmap.
 */
import type { Command } from 'commander';
import { type BitmapAction, changeBitmaps, checkBitmapRequest } from '../../core/image-tools/bitmap.js';
import { ImageToolError } from '../../core/image-tools/image-access.js';
import { byteCount, imageArgument, imageOptsOption, objectOption, runTool } from './image-tool-cli.js';

interface BitmapOptions {
  object: string[];
  f?: string;
  imageOpts?: boolean;
  b?: string;
  F?: string;
  g?: string;
}

export function bitmapCommand(program: Command): void {
  // The operations run in the order given, which commander's parsed options do not keep: they are collected as parsed.
  const actions: BitmapAction[] = [];
  const command = program
    .command('bitmap')
    .addOption(objectOption())
    .description("add, remove, clear, enable, disable or merge into a persistent dirty bitmap of an image (as qemu-img bitmap), in the order given")
    .argument('<filename>', 'the image file (opened read-write)')
    .argument('<bitmap>', 'the bitmap to change')
    .option('--add', 'add the bitmap (persistent, recording)')
    .option('--remove', 'remove the bitmap')
    .option('--clear', 'clear the bitmap')
    .option('--enable', 'make the bitmap record writes')
    .option('--disable', 'stop the bitmap recording writes')
    .option('--merge <source>', 'merge the bitmap SOURCE into it (of this image, or of the image -b names)')
    .option('-g <granularity>', 'granularity of a bitmap --add makes (k, M … suffixes)')
    .option('-b <source_file>', 'the image --merge takes its source from')
    .option('-F <source_fmt>', "that image's format (required with -b: formats are never guessed)")
    .option('-f <fmt>', 'image format (required: formats are never guessed)')
    .addOption(imageOptsOption());
  for (const op of ['add', 'remove', 'clear', 'enable', 'disable'] as const) command.on(`option:${op}`, () => actions.push({ op }));
  command.on('option:merge', (source: string) => actions.push({ op: 'merge', source }));
  command.action((filename: string, bitmap: string, options: BitmapOptions) =>
    runTool('bitmap', async (layer) => {
      const granularity = options.g === undefined ? undefined : byteCount('granularity', options.g);
      checkBitmapRequest(actions, granularity, options.b, options.F);
      const image = imageArgument(layer, filename, options.f, { imageOpts: options.imageOpts });
      if (options.b !== undefined && options.F === undefined) throw new ImageToolError('format of -b must be given with -F');
      await changeBitmaps(layer, {
        image,
        bitmap,
        actions,
        ...(granularity === undefined ? {} : { granularity }),
        ...(options.b === undefined ? {} : { sourceImage: { filename: options.b, format: options.F! } }),
      });
    }, { objects: options.object }),
  );
}
