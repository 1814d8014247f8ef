/** `blocklayer check -f FMT [--output=human|json] [-r leaks|all] [-q] IMG`: qemu-img check. */
import type { Command } from 'commander';
import type { CheckRepair } from '../../core/block/driver.js';
import { CHECK_FAILED, CheckFailedError, checkImage, formatCheckHuman, formatCheckJson, formatRepairNotice } from '../../core/image-tools/check.js';
import { ImageToolError, withImage } from '../../core/image-tools/image-access.js';
import { forceShareOption, imageArgument, imageOptsOption, objectOption, type OutputFormat, outputOption, print, printError, runTool } from './image-tool-cli.js';

interface CheckOptions {
  forceShare?: boolean;
  object: string[];
  f?: string;
  imageOpts?: boolean;
  output: OutputFormat;
  r?: string;
  q?: boolean;
}

function repairMode(value: string | undefined): CheckRepair {
  if (value === undefined) return 'none';
  if (value === 'leaks' || value === 'all') return value;
  throw new ImageToolError(`Unknown option value for -r (expecting 'leaks' or 'all'): ${value}`);
}

export function checkCommand(program: Command): void {
  program
    .command('check')
    .addOption(objectOption())
    .description("check an image's metadata for consistency, optionally repairing it (as qemu-img check)")
    .argument('<filename>', 'the image file (opened read-only, or read-write with -r)')
    .option('-f <fmt>', 'image format (required: formats are never guessed)')
    .addOption(imageOptsOption())
    .addOption(outputOption())
    .option('-r <leaks|all>', 'repair leaked clusters (leaks) or every inconsistency (all)')
    .option('-q', 'quiet: print only errors')
    .addOption(forceShareOption())
    .addHelpText(
      'after',
      '\nExit codes: 0 no inconsistencies (after repairs), 1 check not completed, 2 corruptions, 3 leaked clusters,\n' +
        '63 the format has no check (raw).\n',
    )
    .action((filename: string, options: CheckOptions) =>
      runTool('check', async (layer) => {
        const image = imageArgument(layer, filename, options.f, { imageOpts: options.imageOpts, forceShare: options.forceShare });
        const repair = repairMode(options.r);
        const outcome = await withImage(layer, image, { readOnly: repair === 'none', unmap: repair !== 'none', check: true }, (node) =>
          checkImage(node, filename, repair),
        ).catch((error: unknown) => {
          // What qemu-img printed before its `Check failed: …` (which runTool prints).
          if (error instanceof CheckFailedError) {
            for (const line of error.messages) process.stderr.write(`${line}\n`);
            for (const line of error.reports) printError('check', line);
            if (error.repaired !== undefined && options.output !== 'json' && !options.q) print(formatRepairNotice(error.repaired));
          }
          throw error;
        });
        for (const line of outcome.messages) process.stderr.write(`${line}\n`);
        if (!options.q) print(options.output === 'json' ? formatCheckJson(outcome) : formatCheckHuman(outcome));
        if (outcome.exitCode === 1) printError('check', CHECK_FAILED);
        return outcome.exitCode;
      }, { objects: options.object }),
    );
}
