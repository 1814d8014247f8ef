/**
 * qemu-storage-daemon's `--nbd-server` and `--export`, as it parses them:
 * JSON or keyval (`--export` with the implied key `type`), checked against
 * the schemas the nbd-server plugin registers, then run as nbd-server-start
 * and block-export-add. The daemon does not import the plugin: without it
 * loaded, these options are refused with a message saying so.
 */
import type { BlockLayer } from '../../core/block-layer.js';
import { BlockLayerError } from '../../core/errors.js';
import { EXPORT_IMPLIED_KEY, parseJsonOrKeyval } from '../../core/schema/keyval.js';
import type { QapiValidator } from '../../core/schema/qapi-validator.js';
import { TOKENS } from '../../core/tokens.js';

/** The type the nbd-server plugin registers for `--nbd-server`'s value (QEMU's NbdServerOptions). */
const NBD_SERVER_OPTIONS = 'NbdServerOptions';

export interface NbdArguments {
  nbdServer?: string[];
  export?: string[];
}

/** Starts the `--nbd-server`s, then adds the `--export`s, in order; errors name the option and its value. */
export async function startNbdFromOptions(layer: BlockLayer, args: NbdArguments): Promise<void> {
  const validator = layer.container.get<QapiValidator>(TOKENS.QapiValidator);
  for (const text of args.nbdServer ?? []) {
    await withOption('--nbd-server', text, () => layer.execute('nbd-server-start', nbdServerStartArgs(text, validator)));
  }
  for (const text of args.export ?? []) {
    await withOption('--export', text, () => {
      const command = layer.commands.get('block-export-add');
      if (command?.args === undefined) throw notLoaded('--export');
      return layer.execute('block-export-add', parseJsonOrKeyval(text, command.args, validator, EXPORT_IMPLIED_KEY) as Record<string, unknown>);
    });
  }
}

/** `--nbd-server`'s flat address, as nbd-server-start's `{type, data}` one. */
function nbdServerStartArgs(text: string, validator: QapiValidator): Record<string, unknown> {
  const schema = validator.lookup(NBD_SERVER_OPTIONS);
  if (schema === undefined) throw notLoaded('--nbd-server');
  const options = validator.assert(schema, parseJsonOrKeyval(text, schema, validator)) as Record<string, unknown>;
  const { type, ...data } = options.addr as Record<string, unknown>;
  return { ...options, addr: { type, data } };
}

function notLoaded(option: string): BlockLayerError {
  return new BlockLayerError(`${option} needs the nbd-server plugin, which is not loaded`);
}

/** Runs `step`, prefixing its error with the option that caused it, as qemu-storage-daemon does. */
async function withOption(option: string, value: string, step: () => Promise<unknown>): Promise<void> {
  try {
    await step();
  } catch (error) {
    throw new BlockLayerError(`${option} ${value}: ${(error as Error).message}`, 'GenericError', (error as Partial<BlockLayerError>).hint);
  }
}
