/** `blocklayer create [-f FMT] [-o OPTIONS] [-b BACKING -F FMT] [-u] [-q] IMG [SIZE]`: qemu-img create (`-o help` lists the options). */
import type { Command } from 'commander';
import { executeImgCreate, planCreate } from '../../core/image-tools/create.js';
import { ImageToolError } from '../../core/image-tools/image-access.js';
import { asksForHelp, createOptionHelp } from '../../core/image-tools/option-help.js';
import { collect, objectOption, print, runTool } from './image-tool-cli.js';

interface CreateOptions {
  object: string[];
  f?: string;
  o: string[];
  b?: string;
  F?: string;
  u?: boolean;
  q?: boolean;
}

export function createCommand(program: Command): void {
  program
    .command('create')
    .addOption(objectOption())
    .description('create a new image file (as qemu-img create)')
    .argument('[filename]', 'the image file to create (an existing one is overwritten); not needed with -o help')
    .argument('[size]', "virtual size in bytes; k, M, G, T, P, E suffixes (powers of 1024); default: the backing file's")
    .option('-f <fmt>', 'image format (a driver that can create images)', 'raw')
    .option('-o <options>', "creation options, key=value,... with qemu-img's names (e.g. cluster_size=64k); repeatable", collect, [])
    .option('-b <backing_file>', 'backing file, stored as given (relative names are relative to the new image)')
    .option('-F <backing_fmt>', 'format of the backing file (required with -b)')
    .option('-u', 'unsafe: do not open the backing file (then SIZE must be given)')
    .option('-q', 'quiet: do not print the Formatting line')
    .addHelpText('after', "\nPrints \"Formatting 'IMG', fmt=FMT size=N ...\" (the options given), then creates the image. Exit code 0, or 1 on error.\n")
    .action((filename: string | undefined, size: string | undefined, options: CreateOptions) =>
      runTool('create', async (layer) => {
        if (asksForHelp(options.o)) {
          print(createOptionHelp(layer, options.f ?? 'raw', filename));
          return;
        }
        if (filename === undefined) throw new ImageToolError("Expecting image file name\nTry 'blocklayer --help' for more information");
        const plan = await planCreate(layer, {
          filename,
          format: options.f ?? 'raw',
          ...(size === undefined ? {} : { size }),
          options: options.o,
          ...(options.b === undefined ? {} : { backingFile: options.b }),
          ...(options.F === undefined ? {} : { backingFormat: options.F }),
          unsafe: options.u ?? false,
        });
        if (!options.q) print(`${plan.summary}\n`);
        await executeImgCreate(layer, plan);
      }, { objects: options.object }),
    );
}
