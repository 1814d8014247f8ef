/**
 * Option values as qemu-storage-daemon reads them: JSON when the text starts
 * with `{`, else QEMU's keyval syntax (keyval-parse.ts) typed against the
 * option's schema (keyval-typing.ts). Either way the result still goes
 * through the validator, as QEMU's visitor checks JSON and keyval alike.
 */
import type { TSchema } from '@sinclair/typebox';
import { BlockLayerError } from '../errors.js';
import { parseKeyval } from './keyval-parse.js';
import { typeKeyval } from './keyval-typing.js';
import type { QapiValidator } from './qapi-validator.js';

export {
  BLOCKDEV_IMPLIED_KEY,
  CHARDEV_IMPLIED_KEY,
  EXPORT_IMPLIED_KEY,
  type KeyvalParseResult,
  MONITOR_IMPLIED_KEY,
  OBJECT_IMPLIED_KEY,
  parseKeyval,
  parseKeyvalHelp,
} from './keyval-parse.js';
export { typeKeyval } from './keyval-typing.js';

/** Parses an option's text into the value to validate against `schema`. */
export function parseJsonOrKeyval(text: string, schema: TSchema, validator: QapiValidator, impliedKey?: string): unknown {
  if (text.startsWith('{')) return parseJson(text);
  return typeKeyval(parseKeyval(text, impliedKey), schema, validator);
}

/**
 * JSON.parse, worded as QEMU for the two mistakes a shell makes most: text
 * cut off (Node stops at its end) and text after the object.
 */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    const position = /at position (\d+)/.exec(reason)?.[1];
    if (reason.includes('after JSON')) throw new BlockLayerError('Expecting at most one JSON value');
    if (reason.includes('end of JSON input') || Number(position) >= text.trimEnd().length) {
      throw new BlockLayerError('JSON parse error, premature EOI');
    }
    throw new BlockLayerError(`JSON parse error, ${reason}`);
  }
}
