/**
 * qemu-storage-daemon's command-line options, parsed the way it parses them
 * (JSON or QEMU's key=value syntax) and checked against the same schemas
 * as the QMP commands they correspond to.
 */
import type { BlockdevOptionsValue } from '../../core/block/blockdev-ref.js';
import { BLOCKDEV_OPTIONS } from '../../core/block/blockdev-ref.js';
import { BlockLayerError } from '../../core/errors.js';
import type { QmpAddress } from '../../core/qmp/qmp-server.js';
import { parseJsonOrKeyval } from '../../core/schema/keyval.js';
import type { QapiValidator } from '../../core/schema/qapi-validator.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';

const ChardevOptions = Qapi.flatUnion('ChardevOptions', 'backend', [
  Qapi.struct('ChardevSocketOptions', {
    backend: Qapi.literal('socket'),
    id: Qapi.str(),
    path: Qapi.optional(Qapi.str()),
    host: Qapi.optional(Qapi.str()),
    port: Qapi.optional(Qapi.str()),
    server: Qapi.optional(Qapi.bool({ default: false })),
    wait: Qapi.optional(Qapi.bool({ default: true })),
  }),
  Qapi.struct('ChardevStdioOptions', { backend: Qapi.literal('stdio'), id: Qapi.str() }),
]);
type Chardev = Static<typeof ChardevOptions>;
type SocketChardev = Extract<Chardev, { backend: 'socket' }>;

const MonitorOptions = Qapi.struct('MonitorOptions', {
  chardev: Qapi.str(),
  mode: Qapi.optional(Qapi.enum('MonitorMode', ['control'], { default: 'control' })),
  pretty: Qapi.optional(Qapi.bool({ default: false })),
});

export type QmpListener = (
  | {
      kind: 'socket';
      address: QmpAddress;
      /** Wait for a client before going on (chardev `wait=on`). */
      waitForClient: boolean;
    }
  | { kind: 'stdio' }
) & { pretty: boolean };

export interface DaemonArguments {
  blockdev?: string[];
  chardev?: string[];
  monitor?: string[];
  qmp?: string[];
}

/** The `--blockdev` values, as BlockdevOptions (validated later, by blockdev-add's own path). */
export function parseBlockdevs(values: readonly string[], validator: QapiValidator): BlockdevOptionsValue[] {
  const schema = validator.lookup(BLOCKDEV_OPTIONS)!;
  return values.map((text) => parseJsonOrKeyval(text, schema, validator, 'driver') as BlockdevOptionsValue);
}

/** The QMP monitors asked for with `--chardev`/`--monitor` pairs and `--qmp PATH`. */
export function parseMonitors(args: DaemonArguments, validator: QapiValidator): QmpListener[] {
  const chardevs = new Map<string, Chardev>();
  for (const text of args.chardev ?? []) {
    const chardev = validator.validate(ChardevOptions, parseJsonOrKeyval(text, ChardevOptions, validator, 'backend'));
    if (chardevs.has(chardev.id)) throw new BlockLayerError(`chardev '${chardev.id}' already exists`);
    chardevs.set(chardev.id, chardev);
  }
  const listeners: QmpListener[] = [];
  for (const text of args.monitor ?? []) {
    const monitor = validator.validate(MonitorOptions, parseJsonOrKeyval(text, MonitorOptions, validator, 'chardev'));
    const chardev = chardevs.get(monitor.chardev);
    if (chardev === undefined) throw new BlockLayerError(`chardev "${monitor.chardev}" not found`);
    const pretty = monitor.pretty ?? false;
    if (chardev.backend === 'stdio') listeners.push({ kind: 'stdio', pretty });
    else listeners.push({ kind: 'socket', address: socketAddress(chardev), waitForClient: chardev.wait !== false, pretty });
  }
  for (const path of args.qmp ?? []) {
    listeners.push({ kind: 'socket', address: { type: 'unix', path }, waitForClient: false, pretty: false });
  }
  return listeners;
}

function socketAddress(chardev: SocketChardev): QmpAddress {
  if (chardev.server !== true) {
    throw new BlockLayerError(`chardev '${chardev.id}': only server=on sockets can carry a QMP monitor here`);
  }
  if (chardev.path !== undefined) return { type: 'unix', path: chardev.path };
  if (chardev.port !== undefined) {
    const port = Number(chardev.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new BlockLayerError(`chardev '${chardev.id}': invalid port '${chardev.port}'`);
    return { type: 'inet', host: chardev.host ?? '0.0.0.0', port };
  }
  throw new BlockLayerError(`chardev: socket: no host given`);
}
