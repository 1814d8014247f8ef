/** `blocklayer rebase -f FMT [-u] [-p] [-q] -b BACKING -F FMT IMG` (or `-b ''`): qemu-img rebase. */
import type { Command } from 'commander';
import { rebaseImage } from '../../core/image-tools/rebase.js';
import { forceShareOption, imageArgument, imageOptsOption, objectOption, runTool } from './image-tool-cli.js';
import { ProgressBar } from './progress-bar.js';

interface RebaseOptions {
  forceShare?: boolean;
  object: string[];
  f?: string;
  imageOpts?: boolean;
  b?: string;
  F?: string;
  u?: boolean;
  p?: boolean;
  q?: boolean;
}

export function rebaseCommand(program: Command): void {
  program
    .command('rebase')
    .addOption(objectOption())
    .description('make an image name another backing file, keeping what it reads unless -u (as qemu-img rebase)')
    .argument('<filename>', 'the image to change (opened read-write)')
    .option('-f <fmt>', "the image's format (required: formats are never guessed)")
    .addOption(imageOptsOption())
    .option('-b <backing_file>', "the new backing file, stored as given (relative to the image's directory); '' for none")
    .option('-F <backing_fmt>', "the new backing file's format (required with a backing file)")
    .option('-u', 'unsafe: change the name only, without comparing the old and new backing files')
    .option('-p', 'show a progress bar on stderr')
    .option('-q', 'quiet (no progress bar)')
    .addOption(forceShareOption())
    .addHelpText(
      'after',
      '\nSafe mode writes into the image whatever of the old backing chain differs from the new backing file where\n' +
        'the image allocates nothing, then names the new file; -b "" makes the image stand alone.\n',
    )
    .action((filename: string, options: RebaseOptions) =>
      runTool('rebase', async (layer) => {
        const bar =
          options.p && !options.q
            ? await ProgressBar.create({ format: 'rebase |{bar}| {percentage}% | {done}/{all} MiB', noTTYOutput: true }, true)
            : undefined;
        try {
          await rebaseImage(
            layer,
            {
              image: imageArgument(layer, filename, options.f, { imageOpts: options.imageOpts }),
              ...(options.b === undefined ? {} : { backingFile: options.b }),
              ...(options.F === undefined ? {} : { backingFormat: options.F }),
              unsafe: options.u ?? false,
              forceShare: options.forceShare ?? false,
            },
            bar === undefined ? undefined : (done, total) => bar.update(done, total),
          );
        } finally {
          bar?.stop();
        }
      }, { objects: options.object }),
    );
}
