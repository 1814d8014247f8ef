/**
 * What every image tool shares: its error type (a message and qemu-img's
 * exit code), the explicit format rule, opening an image file as a node of a
 * layer, and parsing sizes the way qemu-img does.
 *
 * Formats are never probed: qemu-img guesses a missing -f from the file's
 * contents, which lets a guest that writes a qcow2 header into a raw image
 * make the host open files named in it. Every tool that opens an image
 * needs its format named (`format must be given with -f`); `create` and
 * `convert -O` default to raw, as qemu-img does, since nothing is read.
 */
import type { BlockLayer } from '../block-layer.js';
import type { BlockNode } from '../block/block-node.js';
import { BlockIoError, BlockLayerError, errorText, strerror } from '../errors.js';
import { BLOCKDEV_OPTIONS } from '../block/blockdev-ref.js';
import { parseJson, parseKeyval, typeKeyval } from '../schema/keyval.js';
import { qemuStrtosz } from '../schema/keyval-typing.js';
import { Qapi } from '../schema/qapi.js';
import { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';

/**
 * A failure a tool reports as `MESSAGE` on stderr, exiting with `exitCode`.
 * `perLine`: each line is a report of its own, printed with the tool's
 * prefix as qemu-img prints each error_report() line; otherwise the lines
 * after the first are a hint, printed as they are.
 */
export class ImageToolError extends BlockLayerError {
  constructor(
    message: string,
    readonly exitCode = 1,
    readonly perLine = false,
  ) {
    super(message);
    this.name = 'ImageToolError';
  }
}

/** An image file and its format (a driver name). */
export interface ImageRef {
  /** The file name; with `options`, the option string they were read from (what qemu-img's messages name). */
  filename: string;
  format: string;
  /** The image's node options (--image-opts: imageOptsRef; a json: filename: jsonFilenameRef), instead of a file of `format`. */
  options?: Record<string, unknown> & { driver: string };
  /** -U: opened with force-share=on, which a read-write open refuses (QEMU's message). */
  forceShare?: boolean;
}

/** The format, or the error the tools give when it is missing. */
export function requireFormat(format: string | undefined, flag = '-f', exitCode = 1): string {
  if (format === undefined || format === '') throw new ImageToolError(`format must be given with ${flag}`, exitCode);
  return format;
}

export interface OpenImageOptions {
  readOnly: boolean;
  /** Pass discard requests to the file (targets being written: holes stay holes). */
  unmap?: boolean;
  /** Ignore flushes (qemu-img's cache=unsafe). */
  noFlush?: boolean;
  /** Exit code of an open failure (qemu-img compare uses 2). */
  exitCode?: number;
  /** Opened for qemu-img check: the driver opens damaged or dirty images as far as checking needs. */
  check?: boolean;
  /** Without the backing chain the image names (`backing: null`; QEMU's BDRV_O_NO_BACKING), for formats that have one. */
  noBacking?: boolean;
}

/** The strerror() text of an I/O failure, as qemu-img prints it (`Input/output error`). */
export function ioErrorText(error: unknown): string {
  return error instanceof BlockIoError ? strerror(error.errno) : errorText(error);
}

/**
 * The protocol node under an image: the driver serving the filename's URI
 * scheme (`nbd+unix:///exp?socket=…`), or a host file.
 */
function protocolOptions(layer: BlockLayer, filename: string): Record<string, unknown> {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(filename)?.[1]?.toLowerCase();
  const driver = scheme === undefined ? undefined : layer.drivers.list().find((d) => d.protocols?.includes(scheme) === true);
  if (driver?.parseFilename === undefined) return { driver: 'file', filename };
  return { driver: driver.name, ...driver.parseFilename(filename) };
}

/**
 * qemu-img's --image-opts: `text` is the image's node options (key=value,…,
 * as -blockdev takes them; a bare first value is `file`, a node name), not
 * a file name, and `format` (-f) may not come with it. The format is the
 * `driver` option and is never guessed; a `file` child (at any depth)
 * given without a driver is its filename's protocol node (a host file, an
 * nbd:// URI's server), as QEMU fills it in. Failures name the option
 * string, as qemu-img's do. With `forceShare` (-U) the options may only
 * say force-share=on, as qemu-img compares the text.
 */
export function imageOptsRef(layer: BlockLayer, text: string, format?: string, exitCode = 1, forceShare = false): ImageRef {
  if (format !== undefined) throw new ImageToolError('--image-opts and --format are mutually exclusive', exitCode);
  const fail = (message: string): never => {
    throw new ImageToolError(`Could not open '${text}': ${message}`, exitCode);
  };
  let options: Record<string, unknown> = {};
  try {
    options = parseKeyval(text, 'file');
  } catch (error) {
    throw new ImageToolError(errorText(error), exitCode);
  }
  // qemu-img compares the option's text: only force-share=on goes with -U.
  if (forceShare && options['force-share'] !== undefined && options['force-share'] !== 'on') {
    throw new ImageToolError('--force-share/-U conflicts with image options', exitCode);
  }
  const driver = options.driver;
  if (typeof driver !== 'string') return fail('the image format must be given with driver=FMT (formats are never guessed)');
  if (layer.drivers.get(driver) === undefined) fail(`Unknown driver '${driver}'`);
  fillProtocols(layer, options);
  const validator = layer.container.get<QapiValidator>(TOKENS.QapiValidator);
  try {
    options = typeKeyval(options, validator.lookup(BLOCKDEV_OPTIONS)!, validator) as Record<string, unknown>;
  } catch (error) {
    fail(errorText(error));
  }
  return { filename: text, format: driver, options: { ...options, driver }, ...(forceShare ? { forceShare } : {}) };
}

/**
 * A `json:{…}` pseudo-filename, as QEMU takes them wherever a file name
 * goes: the image's node options as a JSON object, where dotted keys
 * (`"file.filename"`) nest as in QEMU. `format` (-f) overrides its driver,
 * as in qemu-img; with neither, the format is not guessed. File children
 * without a driver get their filename's protocol, as with --image-opts.
 */
export function jsonFilenameRef(layer: BlockLayer, text: string, format: string | undefined, flag = '-f', exitCode = 1): ImageRef {
  const fail = (message: string): never => {
    throw new ImageToolError(`Could not open '${text}': ${message}`, exitCode);
  };
  let parsed: unknown;
  try {
    parsed = parseJson(text.slice('json:'.length));
  } catch (error) {
    fail(`Could not parse the JSON options: ${errorText(error)}`);
  }
  if (!isOptions(parsed)) return fail('Invalid JSON object given');
  const options = nestDottedKeys(parsed);
  if (format !== undefined) options.driver = format;
  const driver = typeof options.driver === 'string' ? options.driver : requireFormat(undefined, flag, exitCode);
  fillProtocols(layer, options);
  return { filename: text, format: driver, options: { ...options, driver } };
}

/** A JSON object (not an array or null): node options, or a child's. */
function isOptions(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** QEMU's reading of JSON options: `{"file.filename": x}` is `{"file": {"filename": x}}`, merged with what `file` holds already. */
function nestDottedKeys(options: Record<string, unknown>): Record<string, unknown> {
  const nested: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    const path = key.split('.');
    let at = nested;
    for (const part of path.slice(0, -1)) {
      if (!isOptions(at[part])) at[part] = {};
      at = at[part] as Record<string, unknown>;
    }
    const last = path[path.length - 1]!;
    const inner = isOptions(value) ? nestDottedKeys(value) : value;
    const existing = at[last];
    at[last] = isOptions(inner) && isOptions(existing) ? { ...existing, ...inner } : inner;
  }
  return nested;
}

/** Gives every `file` child in `options` (at any depth) that names a filename and no driver its protocol driver, in place. */
function fillProtocols(layer: BlockLayer, options: Record<string, unknown>): void {
  for (const [key, child] of Object.entries(options)) {
    if (!isOptions(child)) continue;
    fillProtocols(layer, child);
    if (key === 'file' && child.driver === undefined && typeof child.filename === 'string') {
      const { filename, ...rest } = child;
      options.file = { ...rest, ...protocolOptions(layer, filename) };
    }
  }
}

/** The node options of an image: its --image-opts, a format over its protocol node, or a protocol driver itself. */
export function imageOptions(layer: BlockLayer, image: ImageRef): Record<string, unknown> & { driver: string } {
  if (image.options !== undefined) return { ...image.options };
  const driver = layer.drivers.get(image.format);
  if (driver?.kind === 'protocol') return { driver: image.format, filename: image.filename };
  return { driver: image.format, file: protocolOptions(layer, image.filename) };
}

/**
 * Opens `image` as an unnamed node of `layer` (its backing chain too, as the
 * image names it); close it with `closeImage`. Failures read as qemu-img's:
 * `Could not open 'a.img': Could not open 'a.img': No such file or directory`.
 */
export async function openImage(layer: BlockLayer, image: ImageRef, options: OpenImageOptions): Promise<BlockNode> {
  const fail = (message: string): never => {
    throw new ImageToolError(`Could not open '${image.filename}': ${message}`, options.exitCode ?? 1);
  };
  const driver = layer.drivers.get(image.format);
  if (driver === undefined) fail(`Unknown driver '${image.format}'`);
  try {
    const node: Record<string, unknown> & { driver: string } = { ...imageOptions(layer, image), 'read-only': options.readOnly };
    if (image.forceShare === true) node['force-share'] = true;
    if (options.noBacking && driver?.children?.some((child) => child.name === 'backing') === true) node.backing = null;
    // The protocol child unmaps anyway (the graph's inherited default, as QEMU's).
    if (options.unmap) node.discard = 'unmap';
    if (options.noFlush) node.cache = { ...(node.cache as object | undefined), 'no-flush': true };
    return await layer.graph.open(node, { readOnly: options.readOnly, check: options.check ?? false });
  } catch (error) {
    return fail(errorText(error));
  }
}

/** Closes a node `openImage` opened, with the children it opened. */
export async function closeImage(layer: BlockLayer, node: BlockNode): Promise<void> {
  await layer.graph.closeIfUnused(node);
}

/** Runs `body` on the opened image and closes it afterwards. */
export async function withImage<T>(
  layer: BlockLayer,
  image: ImageRef,
  options: OpenImageOptions,
  body: (node: BlockNode) => Promise<T>,
): Promise<T> {
  const node = await openImage(layer, image, options);
  try {
    return await body(node);
  } finally {
    await closeImage(layer, node);
  }
}

const SIZE = Qapi.size();
const validator = new QapiValidator();

/**
 * A byte count as qemu-img's cvtnum() reads it (qemu_strtosz): an integer
 * or 0x hex, optionally with a fraction and a k/M/G/T/P/E suffix (powers of
 * 1024; `b` is bytes). Undefined when the text is not one.
 */
export function parseSize(text: string): number | undefined {
  try {
    const value = typeKeyval(text, SIZE, validator);
    return typeof value === 'number' && Number.isSafeInteger(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The largest image size blocklayer handles: sizes are JavaScript numbers, exact below 2^53, and round up to whole sectors. */
export const MAX_IMAGE_SIZE = 2 ** 53 - 512;

/**
 * An image size argument (create's SIZE, measure's --size) as qemu-img
 * reads it, cvtnum("image size"), then held to MAX_IMAGE_SIZE.
 */
export function imageSizeArgument(text: string): number {
  const value = cvtnum('image size', text, 0n, 2n ** 63n - 1n);
  if (value > BigInt(MAX_IMAGE_SIZE)) {
    throw new ImageToolError(`Image size ${value} is too large: blocklayer handles images of at most ${MAX_IMAGE_SIZE} bytes`);
  }
  return Number(value);
}

/** cvtnum()'s two reports when the text is not a size (see ImageToolError's perLine). */
export function cvtnumSyntaxError(name: string): string {
  return `Invalid ${name} specified. You may use k, M, G, T, P or E suffixes for\nkilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`;
}

/**
 * qemu-img's cvtnum_full(): a byte count named `name` in its messages,
 * between `min` and `max`, as a bigint (counts go up to 2^63 - 1). Not a
 * size: two reports (perLine); out of range: one.
 */
export function cvtnum(name: string, text: string, min: bigint, max: bigint): bigint {
  const value = qemuStrtosz(text);
  if (value === 'EINVAL') throw new ImageToolError(cvtnumSyntaxError(name), 1, true);
  if (value === 'ERANGE' || value < min || value > max) throw new ImageToolError(`Invalid ${name} specified. Must be between ${min} and ${max}.`);
  return value;
}
