/**
 * qemu-img amend: changes an open image's format options (-o) through the
 * driver's `amend`, checked as qemu-img checks them: options the format
 * cannot amend are invalid, with a hint when they are creation options;
 * values in QemuOpts' words; then the driver's checks and changes, in its
 * order and with its messages.
 */
import type { BlockLayer } from '../block-layer.js';
import { parseKeyval, typeKeyval } from '../schema/keyval.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { annotations, type TObject } from '../schema/qapi.js';
import { TOKENS } from '../tokens.js';
import { type ImageRef, ImageToolError, withImage } from './image-access.js';
import { errorText } from '../errors.js';

export interface AmendRequest {
  image: ImageRef;
  /** Each -o argument: `key=value,…`. */
  options: readonly string[];
}

/** Whether `given` reads as the format's own creation options (qemu-img's second parse, for its hint). */
function creationOptions(given: Record<string, unknown>, schema: TObject | undefined, validator: QapiValidator): boolean {
  const own = (key: string): boolean => schema?.properties[key] !== undefined && annotations(schema.properties[key]).qemuOptsProtocol !== true;
  if (schema === undefined || !Object.keys(given).every(own)) return false;
  try {
    typeKeyval({ ...given, filename: '' }, schema, validator, 'qemu-opts');
    return true;
  } catch {
    return false;
  }
}

export async function amendImage(layer: BlockLayer, request: AmendRequest): Promise<void> {
  const text = request.options.filter((o) => o !== '').join(',');
  if (text === '') throw new ImageToolError("Must specify options (-o)\nTry 'blocklayer --help' for more information");
  await withImage(layer, request.image, { readOnly: false }, async (node) => {
    const { driver } = node;
    const schema = driver.amendOptions;
    if (driver.amend === undefined || schema === undefined) {
      throw new ImageToolError(`Format driver '${driver.name}' does not support option amendment`);
    }
    const validator = layer.container.get<QapiValidator>(TOKENS.QapiValidator);
    let given: Record<string, unknown>;
    let options: Record<string, unknown>;
    try {
      given = parseKeyval(text);
      const unknown = Object.keys(given).find((key) => schema.properties[key] === undefined);
      if (unknown !== undefined) {
        const hint = creationOptions(given, driver.createOptions, validator) ? '\nThis option is only supported for image creation' : '';
        throw new ImageToolError(`Invalid parameter '${unknown}'${hint}`);
      }
      options = typeKeyval(given, schema, validator, 'qemu-opts') as Record<string, unknown>;
    } catch (error) {
      throw error instanceof ImageToolError ? error : new ImageToolError(errorText(error));
    }
    try {
      await node.amend(options);
    } catch (error) {
      throw new ImageToolError(errorText(error));
    }
  });
}
