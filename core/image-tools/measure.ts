/**
 * qemu-img measure: how large an image of the output format would be,
 * either holding what an existing image reads (its whole backing chain, as
 * convert would copy it) or empty with a given virtual size. The format's
 * driver does the arithmetic (`measure`); this side parses the options
 * against the format's creation options, and counts the source's data and
 * lists its persistent bitmaps for it.
 */
import type { BitmapStore } from '../bitmap/bitmap-store.js';
import type { BlockLayer } from '../block-layer.js';
import type { BlockNode } from '../block/block-node.js';
import type { MeasureBitmap, MeasureResult, MeasureSource } from '../block/driver.js';
import { parseKeyval, typeKeyval } from '../schema/keyval.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';
import { chainStatus, STATUS_PROBE } from './chain-status.js';
import { type ImageRef, imageSizeArgument, ImageToolError, withImage } from './image-access.js';
import { qemuJsonPretty } from './qemu-text.js';
import { errorText } from '../errors.js';

export interface MeasureRequest {
  /** --size: the virtual size of an empty image (k/M/G suffixes). */
  size?: string;
  /** The image whose data the new one would hold. */
  source?: ImageRef;
  /** -O: the output format (default raw). */
  format?: string;
  /** Each -o argument: `key=value,…`, the output format's creation options. */
  options?: readonly string[];
}

/**
 * Bytes of data the chain under `node` stores, counted as qcow2_measure
 * counts them: ranges that read as zeroes or that nothing allocates are
 * skipped; a data range counts from the start of its first `granularity`
 * unit to the end of its last one, the next range starting after that.
 */
async function dataBytes(node: BlockNode, granularity: number): Promise<number> {
  const size = node.length;
  let required = 0;
  for (let offset = 0; offset < size; ) {
    const extents = await chainStatus(node, offset, Math.min(STATUS_PROBE, size - offset)).catch((error: unknown) => {
      throw new ImageToolError(`Unable to get block status: ${errorText(error)}`);
    });
    if (extents.length === 0) throw new ImageToolError('Unable to get block status: Input/output error');
    // Each extent from where the last rounding left off: what asking again from there would answer.
    for (const extent of extents) {
      const end = extent.offset + extent.length;
      if (end <= offset) continue;
      let length = end - offset;
      if (!extent.zero && extent.present && extent.data) {
        length = Math.ceil((offset + length) / granularity) * granularity - offset;
        required += (offset % granularity) + length;
      }
      offset += length;
    }
  }
  return required;
}

function sourceOf(layer: BlockLayer, node: BlockNode): MeasureSource {
  const store = layer.container.get<BitmapStore>(TOKENS.BitmapStore);
  const canStore = node.driver.canStoreBitmaps?.(node.driverState) ?? false;
  const bitmaps: MeasureBitmap[] | undefined = canStore
    ? store
        .list(node)
        .filter((b) => b.persistent && b.name !== undefined)
        .map((b) => ({ name: b.name!, granularity: b.granularity, size: b.size }))
    : undefined;
  return { length: node.length, dataBytes: (granularity) => dataBytes(node, granularity), bitmaps };
}

/** The format's checks and measurement, as qemu-img makes them once the source (if any) is open. */
async function measureFormat(layer: BlockLayer, request: MeasureRequest, size: number | undefined, source?: MeasureSource): Promise<MeasureResult> {
  const format = request.format ?? 'raw';
  const driver = layer.drivers.get(format);
  if (driver === undefined) throw new ImageToolError(`Unknown file format '${format}'`);
  const schema = driver.createOptions;
  if (schema === undefined) throw new ImageToolError(`Format driver '${format}' does not support image creation`);
  const given = parseKeyval((request.options ?? []).filter((o) => o !== '').join(','));
  for (const key of Object.keys(given)) {
    if (key === 'filename' || schema.properties[key] === undefined) {
      throw new ImageToolError(`Invalid parameter '${key}'\nInvalid options for file format '${format}'`, 1, true);
    }
  }
  if (driver.measure === undefined) throw new ImageToolError(`Block driver '${format}' does not support size measurement`);
  let options: Record<string, unknown>;
  try {
    const validator = layer.container.get<QapiValidator>(TOKENS.QapiValidator);
    // A source gives the size; the options are typed as for create, which needs one.
    options = typeKeyval({ ...given, filename: '', size: size ?? 0 }, schema, validator, 'qemu-opts') as Record<string, unknown>;
  } catch (error) {
    throw new ImageToolError(`${errorText(error)}\nInvalid options for file format '${format}'`, 1, true);
  }
  return driver.measure({ options, ...(source === undefined ? {} : { source }) }).catch((error: unknown) => {
    throw error instanceof ImageToolError ? error : new ImageToolError(errorText(error));
  });
}

/** qemu-img measure: the arguments checked, the source (if any) opened, then the format's checks and measurement. */
export async function measureImage(layer: BlockLayer, request: MeasureRequest): Promise<MeasureResult> {
  // qemu-img reads --size with the other options, before it checks how they go together.
  const size = request.size === undefined ? undefined : imageSizeArgument(request.size);
  if (size !== undefined && request.source !== undefined) throw new ImageToolError('--size N cannot be used together with a filename.');
  if (size === undefined && request.source === undefined) throw new ImageToolError('Either --size N or one filename must be specified.');
  if (request.source === undefined) return measureFormat(layer, request, size);
  return withImage(layer, request.source, { readOnly: true }, (node) => measureFormat(layer, request, size, sourceOf(layer, node)));
}

export function formatMeasureHuman(result: MeasureResult): string {
  const lines = [`required size: ${result.required}`, `fully allocated size: ${result.fullyAllocated}`];
  if (result.bitmaps !== undefined) lines.push(`bitmaps size: ${result.bitmaps}`);
  return `${lines.join('\n')}\n`;
}

/** BlockMeasureInfo as qemu-img 7.2 prints it. */
export function formatMeasureJson(result: MeasureResult): string {
  return qemuJsonPretty({ required: result.required, 'fully-allocated': result.fullyAllocated, bitmaps: result.bitmaps });
}
