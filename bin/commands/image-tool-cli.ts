/**
 * What the qemu-img-style commands share on the command line: a layer for
 * the run, errors as `blocklayer COMMAND: MESSAGE` with the tool's exit
 * code, --output, and numbers as qemu-img reads them.
 */
import { InvalidArgumentError, Option } from 'commander';
import { BlockLayer } from '../../core/block-layer.js';
import { cvtnum, type ImageRef, ImageToolError, imageOptsRef, jsonFilenameRef, requireFormat } from '../../core/image-tools/image-access.js';
import { addObjectOption } from '../daemon/object-options.js';
import { LINKED_PLUGINS } from '../linked-plugins.js';
import { errorText } from '../../core/errors.js';

export type OutputFormat = 'human' | 'json';

export const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** `--output=human|json`, with qemu-img's complaint about anything else. */
export function outputOption(): Option {
  return new Option('--output <ofmt>', 'output format: human or json')
    .default('human')
    .argParser((value: string): OutputFormat => {
      if (value !== 'human' && value !== 'json') throw new InvalidArgumentError('--output must be used with human or json as argument.');
      return value;
    });
}

/** -U: the image is opened with force-share=on, as qemu-img's -U opens it: it opens while another process writes it. */
export function forceShareOption(): Option {
  return new Option('-U, --force-share', 'open the image with force-share=on, even while another process writes it (read-only opens only)');
}

/** `--object OBJECTDEF` (repeatable): objects the images' options refer to, such as an NBD client's TLS credentials. */
export function objectOption(): Option {
  return new Option('--object <objectdef>', 'add an object first (qom-type,id=ID,..., as the daemon\'s --object), e.g. tls-creds-psk for an NBD image; repeatable')
    .argParser(collect)
    .default([]);
}

/** --image-opts (or `flags`): the image argument is an option string, not a file name (imageArgument). */
export function imageOptsOption(flags = '--image-opts', what = 'the image argument'): Option {
  return new Option(flags, `treat ${what} as node options (key=value,..., with driver=FMT), not a file name; not with -f`);
}

/** How a command reads its image argument (imageArgument). */
export interface ImageArgumentOptions {
  /** --image-opts: the argument is node options. */
  imageOpts?: boolean | undefined;
  /** -U: opened with force-share=on (ImageRef.forceShare). */
  forceShare?: boolean | undefined;
  /** The format flag named in messages. */
  flag?: string;
  exitCode?: number;
}

/**
 * The image a command names: `filename` in its -f `format` (a `json:{…}`
 * filename: the options it spells, -f overriding their driver), or with
 * --image-opts the options `filename` spells (which -f may not come with).
 */
export function imageArgument(
  layer: BlockLayer,
  filename: string,
  format: string | undefined,
  { imageOpts = false, forceShare = false, flag = '-f', exitCode = 1 }: ImageArgumentOptions = {},
): ImageRef {
  if (imageOpts) return imageOptsRef(layer, filename, format, exitCode, forceShare);
  const image = filename.startsWith('json:') ? jsonFilenameRef(layer, filename, format, flag, exitCode) : { filename, format: requireFormat(format, flag, exitCode) };
  return forceShare ? { ...image, forceShare } : image;
}

/** `blocklayer COMMAND: MESSAGE`; with `perLine`, every line so (see ImageToolError). */
export function printError(command: string, message: string, perLine = false): void {
  const lines = perLine ? message.split('\n') : [message];
  process.stderr.write(lines.map((line) => `blocklayer ${command}: ${line}\n`).join(''));
}

export function print(text: string): void {
  process.stdout.write(text);
}

/**
 * Runs one command with a fresh layer (the default plugins) holding the
 * `objects` (--object values), made first, as qemu-img makes them while it
 * reads its options. `body` returns the exit code; a failure is printed and
 * exits with its ImageToolError code, or `failureCode` for anything else.
 */
export async function runTool(
  command: string,
  body: (layer: BlockLayer) => Promise<number | void>,
  { failureCode = 1, objects = [] }: { failureCode?: number; objects?: readonly string[] } = {},
): Promise<void> {
  let layer: BlockLayer | undefined;
  try {
    layer = await BlockLayer.create({ linkedModules: LINKED_PLUGINS });
    for (const text of objects) await addObjectOption(layer, text);
    process.exitCode = (await body(layer)) ?? 0;
  } catch (error) {
    printError(command, errorText(error), error instanceof ImageToolError && error.perLine);
    process.exitCode = error instanceof ImageToolError ? error.exitCode : failureCode;
  } finally {
    await layer?.close().catch(() => undefined);
  }
}

/**
 * A byte count given as `name` (an offset, a size) as qemu-img's cvtnum()
 * reads it, between `min` and `max` (default 0 and 2^63 - 1), with its
 * messages. As a number: counts past 2^53 (offsets beyond any image) are
 * rounded.
 */
export function byteCount(name: string, text: string, min = 0n, max = 2n ** 63n - 1n): number {
  return Number(cvtnum(name, text, min, max));
}

/** qemu_strtoul(text, NULL, 0): decimal, 0x hex or 0 octal, at most `max`; else ImageToolError(message). */
export function parseUnsigned(text: string | undefined, fallback: number, message: string, max = 2 ** 31 - 1): number {
  if (text === undefined) return fallback;
  const trimmed = text.trim();
  let value = NaN;
  if (/^0[xX][0-9a-fA-F]+$/.test(trimmed)) value = parseInt(trimmed.slice(2), 16);
  else if (/^0[0-7]*$/.test(trimmed)) value = parseInt(trimmed, 8);
  else if (/^[1-9]\d*$/.test(trimmed)) value = Number(trimmed);
  if (!Number.isSafeInteger(value) || value > max) throw new ImageToolError(message);
  return value;
}
