/**
 * nbd-server-start: listen for NBD clients on a Unix or TCP address (QEMU's
 * SocketAddressLegacy, `{type, data}`). Also publishes the flat form that
 * qemu-storage-daemon's `--nbd-server` takes (NbdServerOptions), so the
 * daemon can parse that option without importing this plugin.
 */
import { inject, injectable } from 'inversify';
import { BlockLayerError } from '../../core/errors.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import type { QapiValidator } from '../../core/schema/qapi-validator.js';
import { TOKENS } from '../../core/tokens.js';
import type { ListenAddress } from './listener.js';
import { NbdServer } from './nbd-server.js';
import { NBD_SERVER_OPTIONS, NbdServerOptions, NbdServerStart, type NbdServerStartArgs, type SocketAddressLegacyValue } from './options.js';

@injectable()
export class NbdServerStartCommand implements QmpCommand<NbdServerStartArgs> {
  readonly name = 'nbd-server-start';
  readonly summary = 'Start the NBD server on a Unix or TCP address';
  readonly args = NbdServerStart;

  constructor(
    @inject(NbdServer) private readonly server: NbdServer,
    @inject(TOKENS.QapiValidator) validator: QapiValidator,
  ) {
    validator.define({ ...NbdServerOptions, $id: NBD_SERVER_OPTIONS });
  }

  async execute(args: NbdServerStartArgs): Promise<void> {
    await this.server.start(listenAddress(args.addr), {
      tlsCreds: args['tls-creds'],
      tlsAuthz: args['tls-authz'],
      maxConnections: args['max-connections'],
    });
  }
}

/** The address to bind; vsock and fd addresses are refused. */
export function listenAddress(addr: SocketAddressLegacyValue): ListenAddress {
  switch (addr.type) {
    case 'unix':
      return { type: 'unix', path: addr.data.path, abstract: addr.data.abstract ?? false };
    case 'inet':
      if (addr.data.mptcp === true) throw new BlockLayerError('MPTCP is not supported by the NBD server');
      return { type: 'inet', host: addr.data.host, port: addr.data.port, keepAlive: addr.data['keep-alive'] ?? false };
    default:
      throw new BlockLayerError(`NBD server address type '${addr.type}' is not supported (use unix or inet)`);
  }
}
