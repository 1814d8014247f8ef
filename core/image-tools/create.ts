/**
 * qemu-img create: the driver's creation options from `-o key=value,…`
 * (qemu-img's option names, typed against the driver's createOptions
 * schema), the size argument, and -b/-F for a backing file; then the
 * driver's `create` through the layer's ImageCreator.
 *
 * As qemu-img, planning (option and size errors) comes before the
 * "Formatting …" line, creating (the driver's errors) after it. Without a
 * size, an image with a backing file takes the backing image's, which is
 * opened for that (and to check it) unless `unsafe` (-u).
 */
import { dirname, isAbsolute, join } from 'node:path';
import type { BlockLayer } from '../block-layer.js';
import type { ImageCreator } from '../block/image-creator.js';
import { errorText, toBlockIoError } from '../errors.js';
import { parseKeyval, typeKeyval } from '../schema/keyval.js';
import { annotations, type TObject } from '../schema/qapi.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';
import { imageSizeArgument, ImageToolError, withImage } from './image-access.js';

export interface CreateRequest {
  filename: string;
  /** Default: raw, as qemu-img. */
  format?: string;
  /** The size argument as typed (k/M/G/T suffixes), or bytes. */
  size?: string | number;
  /** Each -o argument: `key=value,…`. */
  options?: readonly string[];
  /** -b: backing file name, stored as given (relative to the new image). */
  backingFile?: string;
  /** -F: the backing file's format. */
  backingFormat?: string;
  /** -u: do not open the backing file (then the size must be given). */
  unsafe?: boolean;
}

export interface CreatePlan {
  filename: string;
  format: string;
  /** The driver's creation options, typed. */
  options: Record<string, unknown>;
  /** `Formatting 'IMG', fmt=FMT size=N …`: what qemu-img prints before creating. */
  summary: string;
}

const SECTOR = 512;

/**
 * The Formatting line's options, as QEMU's qemu_opts_print() gives them:
 * every option of the creation list in its order, given or with a default
 * QEMU's list holds (qemuOptsDefault); sizes and numbers as numbers, other
 * values as typed, commas doubled.
 */
function formattingOptions(schema: TObject, given: Record<string, unknown>, typed: Record<string, unknown>): string[] {
  const shown: string[] = [];
  for (const [key, property] of Object.entries(schema.properties)) {
    if (key === 'filename') continue;
    const type = annotations(property).qapiType;
    let text: string | undefined;
    if (typed[key] !== undefined && (type === 'size' || type === 'int')) text = String(typed[key]);
    else if (typeof given[key] === 'string') text = given[key].replaceAll(',', ',,');
    else text = annotations(property).qemuOptsDefault;
    if (text !== undefined) shown.push(`${key}=${text}`);
  }
  return shown;
}

/** Checks and types everything; creates nothing. */
export async function planCreate(layer: BlockLayer, request: CreateRequest): Promise<CreatePlan> {
  const { filename } = request;
  // qemu-img reads the size argument before it looks at anything else.
  let size = typeof request.size === 'string' ? imageSizeArgument(request.size) : request.size;
  const format = request.format ?? 'raw';
  const driver = layer.drivers.get(format);
  if (driver === undefined) throw new ImageToolError(`Unknown file format '${format}'`);
  const schema = driver.createOptions;
  if (driver.create === undefined || schema === undefined) {
    throw new ImageToolError(`Format driver '${format}' does not support image creation`);
  }
  const given = parseKeyval((request.options ?? []).filter((o) => o !== '').join(','));
  for (const key of Object.keys(given)) {
    if (key === 'filename' || schema.properties[key] === undefined) throw new ImageToolError(`${filename}: Invalid parameter '${key}'`);
  }
  if (size !== undefined && given.size !== undefined) throw new ImageToolError(`${filename}: The image size must be specified only once`);
  const backingFile = request.backingFile ?? (given.backing_file as string | undefined);
  const backingFormat = request.backingFormat ?? (given.backing_fmt as string | undefined);
  if (backingFile !== undefined) {
    if (schema.properties.backing_file === undefined) {
      throw new ImageToolError(`${filename}: Backing file not supported for file format '${format}'`);
    }
    if (backingFormat === undefined) throw new ImageToolError(`${filename}: Backing file specified without backing format`);
    given.backing_file = backingFile;
    given.backing_fmt = backingFormat;
    if (!request.unsafe) {
      const path = isAbsolute(backingFile) ? backingFile : join(dirname(filename), backingFile);
      const backingSize = await withImage(layer, { filename: path, format: backingFormat }, { readOnly: true }, async (node) => node.length)
        .catch((error: unknown) => {
          throw new ImageToolError(`${filename}: ${errorText(error)}\nCould not open backing image.`);
        });
      if (size === undefined && given.size === undefined) size = backingSize;
    }
  }
  if (size !== undefined) given.size = size;
  if (given.size === undefined) throw new ImageToolError(`${filename}: Image creation needs a size parameter`);
  let options: Record<string, unknown>;
  try {
    const validator = layer.container.get<QapiValidator>(TOKENS.QapiValidator);
    options = typeKeyval({ ...given, filename }, schema, validator, 'qemu-opts') as Record<string, unknown>;
  } catch (error) {
    throw new ImageToolError(`${filename}: ${errorText(error)}`);
  }
  const shown = formattingOptions(schema, given, options);
  // qemu-img's create paths round the size up to whole sectors (the Formatting line shows it as given).
  if (typeof options.size === 'number') options.size = Math.ceil(options.size / SECTOR) * SECTOR;
  return { filename, format, options, summary: `Formatting '${filename}', fmt=${format} ${shown.join(' ')}` };
}

/**
 * Creates the image as planned; driver errors read `IMG: message`, as
 * qemu-img's, or `IMG: CONTEXT: message` where the tool words it so.
 */
export async function executeCreate(layer: BlockLayer, plan: CreatePlan, context?: string): Promise<void> {
  try {
    await layer.container.get<ImageCreator>(TOKENS.ImageCreator).create(plan.format, plan.options);
  } catch (error) {
    throw new ImageToolError(`${plan.filename}: ${context === undefined ? '' : `${context}: `}${errorText(error)}`);
  }
}

/**
 * qemu-img create's creation (bdrv_img_create): as executeCreate, but a
 * file system's EFBIG is worded as the size being too large for the format,
 * with a hint where the format has a cluster size.
 */
export async function executeImgCreate(layer: BlockLayer, plan: CreatePlan): Promise<void> {
  try {
    await layer.container.get<ImageCreator>(TOKENS.ImageCreator).create(plan.format, plan.options);
  } catch (error) {
    if (toBlockIoError(error).errno !== 'EFBIG') throw new ImageToolError(`${plan.filename}: ${errorText(error)}`);
    const clusterSize = layer.drivers.get(plan.format)?.createOptions?.properties.cluster_size;
    const clustered = plan.options.cluster_size !== undefined || (clusterSize !== undefined && annotations(clusterSize).qemuOptsDefault !== undefined);
    const hint = clustered ? ' (try using a larger cluster size)' : '';
    throw new ImageToolError(`${plan.filename}: The image size is too large for file format '${plan.format}'${hint}`);
  }
}
