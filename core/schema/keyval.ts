/**
 * Option values as qemu-storage-daemon reads them: JSON when the text starts
 * with `{`, else QEMU's keyval syntax (keyval-parse.ts) typed against the
 * option's schema (keyval-typing.ts). Either way the result still goes
 * through the validator, as QEMU's visitor checks JSON and keyval alike.
 */
import type { TSchema } from '@sinclair/typebox';
import { BlockLayerError } from '../errors.js';
import { QmpJsonStream } from '../qmp/qmp-json-stream.js';
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
 * QEMU's qobject_from_json(): the text through the same lexer and parser as
 * QMP input, so that a mistake reads as QEMU words it (`JSON parse error,
 * stray '…'`, `missing : in object pair`, `premature EOI`); the first error
 * wins, and anything after the first value is `Expecting at most one JSON
 * value`.
 */
export function parseJson(text: string): unknown {
  let outcome: { value: unknown } | { error: string } | undefined;
  const consume = (next: { value: unknown } | { error: string }): void => {
    if (outcome !== undefined && 'value' in outcome) outcome = { error: 'Expecting at most one JSON value' };
    else outcome ??= next;
  };
  const stream = new QmpJsonStream({ value: (value) => consume({ value }), error: (error) => consume({ error }) });
  stream.push(Buffer.from(text, 'utf8'));
  stream.flush();
  if (outcome === undefined) throw new BlockLayerError('JSON parse error, premature EOI');
  if ('error' in outcome) throw new BlockLayerError(outcome.error);
  return outcome.value;
}
