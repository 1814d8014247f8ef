/** `blocklayer snapshot -f FMT [-l | -a SNAPSHOT | -c SNAPSHOT | -d SNAPSHOT] IMG`: qemu-img snapshot. */
import type { Command } from 'commander';
import { ImageToolError } from '../../core/image-tools/image-access.js';
import { type SnapshotAction, snapshotImage } from '../../core/image-tools/snapshot.js';
import { forceShareOption, imageArgument, imageOptsOption, objectOption, print, runTool } from './image-tool-cli.js';

interface SnapshotOptions {
  object: string[];
  f?: string;
  imageOpts?: boolean;
  forceShare?: boolean;
}

const MIXED = "Cannot mix '-l', '-a', '-c', '-d'\nTry 'blocklayer --help' for more information";

export function snapshotCommand(program: Command): void {
  // One action, taken as parsed: commander keeps no order, and a second one is an error.
  const actions: SnapshotAction[] = [];
  const command = program
    .command('snapshot')
    .addOption(objectOption())
    .description("list, create, apply or delete an image's internal snapshots (as qemu-img snapshot)")
    .argument('<filename>', 'the image (read-only with -l, else read-write)')
    .option('-f <fmt>', "the image's format (required: formats are never guessed)")
    .addOption(imageOptsOption())
    .option('-l', 'list the snapshots')
    .option('-c <snapshot>', "create a snapshot of the image's current content, named so")
    .option('-a <snapshot>', 'apply a snapshot (an id or a name): the image reads as it did then')
    .option('-d <snapshot>', 'delete the snapshot of that name')
    .option('-q', 'quiet (nothing is printed but the list anyway)')
    .addOption(forceShareOption());
  command.on('option:l', () => actions.push({ op: 'list' }));
  command.on('option:c', (name: string) => actions.push({ op: 'create', name }));
  command.on('option:a', (name: string) => actions.push({ op: 'apply', name }));
  command.on('option:d', (name: string) => actions.push({ op: 'delete', name }));
  command.action((filename: string, options: SnapshotOptions) =>
    runTool('snapshot', async (layer) => {
      if (actions.length > 1) throw new ImageToolError(MIXED);
      const image = imageArgument(layer, filename, options.f, { imageOpts: options.imageOpts, forceShare: options.forceShare });
      print(await snapshotImage(layer, { image, action: actions[0] ?? { op: 'none' } }));
    }, { objects: options.object }),
  );
}
