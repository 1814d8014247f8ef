/**
 * qemu-storage-daemon's `--object`: JSON or keyval with the implied key
 * `qom-type` (`--object tls-creds-psk,id=tls0,dir=/etc/pki/qemu,endpoint=server`),
 * typed and checked against object-add's ObjectOptions, then added to the
 * layer's objects. Errors name the option and its value, as QEMU's do.
 */
import type { BlockLayer } from '../../core/block-layer.js';
import { BlockLayerError } from '../../core/errors.js';
import { OBJECT_OPTIONS } from '../../core/objects/object-registry.js';
import { OBJECT_IMPLIED_KEY, parseJsonOrKeyval } from '../../core/schema/keyval.js';
import type { QapiValidator } from '../../core/schema/qapi-validator.js';
import { TOKENS } from '../../core/tokens.js';

export interface ObjectArguments {
  object?: string[];
}

/** Adds one `--object` value's object; errors are QEMU's, as they are. */
export async function addObjectOption(layer: BlockLayer, text: string): Promise<void> {
  const validator = layer.container.get<QapiValidator>(TOKENS.QapiValidator);
  const schema = validator.lookup(OBJECT_OPTIONS)!;
  const options = validator.assert(schema, parseJsonOrKeyval(text, schema, validator, OBJECT_IMPLIED_KEY)) as Record<string, unknown>;
  const { 'qom-type': qomType, ...props } = options;
  await layer.objects.add(qomType as string, props);
}

/** Adds the `--object`s, in order; an error names the option. */
export async function addObjectsFromOptions(layer: BlockLayer, args: ObjectArguments): Promise<void> {
  for (const text of args.object ?? []) {
    try {
      await addObjectOption(layer, text);
    } catch (error) {
      throw new BlockLayerError(`--object ${text}: ${(error as Error).message}`);
    }
  }
}
