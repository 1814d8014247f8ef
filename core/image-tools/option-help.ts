/**
 * `-o help` (or `-o ?`) for qemu-img create and amend: the options a format
 * takes, laid out as QEMU's qemu_opts_print_help lays them out (`  name=<type>`,
 * padded to 24 columns, ` - ` and the description, sorted as strcmp sorts),
 * with this project's descriptions.
 */
import type { BlockLayer } from '../block-layer.js';
import { parseKeyvalHelp } from '../schema/keyval-parse.js';
import { annotations, type TObject } from '../schema/qapi.js';
import { ImageToolError } from './image-access.js';

/** Whether the -o arguments ask for help. */
export function asksForHelp(options: readonly string[]): boolean {
  try {
    return parseKeyvalHelp(options.filter((o) => o !== '').join(',')).help;
  } catch {
    return false;
  }
}

/** QemuOpts' names for the option types. */
function typeName(schema: TObject['properties'][string]): string {
  const type = annotations(schema).qapiType;
  if (type === 'bool') return 'bool (on/off)';
  if (type === 'size') return 'size';
  if (type === 'int' || type?.startsWith('uint') === true) return 'num';
  return 'str';
}

/** One line per option; `protocol`: with the options QEMU takes from the file's list. */
function optionLines(schema: TObject, protocol: boolean): string {
  const lines = Object.entries(schema.properties)
    .filter(([name, property]) => name !== 'filename' && (protocol || annotations(property).qemuOptsProtocol !== true))
    .map(([name, property]) => {
      const head = `  ${name}=<${typeName(property)}>`;
      return property.description === undefined ? head : `${head.padEnd(24)} - ${property.description}`;
    });
  return lines.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map((line) => `${line}\n`).join('');
}

/** qemu-img create -o help: the format's creation options; with a target file name, the file's too. */
export function createOptionHelp(layer: BlockLayer, format: string, filename: string | undefined): string {
  const driver = layer.drivers.get(format);
  if (driver === undefined) throw new ImageToolError(`Unknown file format '${format}'`);
  if (driver.createOptions === undefined) throw new ImageToolError(`Format driver '${format}' does not support image creation`);
  // With a target, qemu-img lists the format's options and the file's together, under no name.
  if (filename !== undefined) return `Supported options:\n${optionLines(driver.createOptions, true)}`;
  return (
    `Supported ${format} options:\n${optionLines(driver.createOptions, false)}` +
    '\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n'
  );
}

/** qemu-img amend -o help: the options the format can change. */
export function amendOptionHelp(layer: BlockLayer, format: string): string {
  const driver = layer.drivers.get(format);
  if (driver === undefined) throw new ImageToolError(`Unknown file format '${format}'`);
  if (driver.amendOptions === undefined) throw new ImageToolError(`Format driver '${format}' does not support option amendment`);
  return `Amend options for '${format}':\n${optionLines(driver.amendOptions, false)}`;
}
