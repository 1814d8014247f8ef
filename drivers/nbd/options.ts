/** Options of the nbd driver: QEMU's BlockdevOptionsNbd, in QEMU's order, with its SocketAddress flat union. */
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const InetSocketAddress = Qapi.struct('InetSocketAddress', {
  type: Qapi.literal('inet'),
  host: Qapi.str({ description: 'host name or IP address' }),
  port: Qapi.str({ description: 'port number (a string, as in QEMU)' }),
});

export const UnixSocketAddress = Qapi.struct('UnixSocketAddress', {
  type: Qapi.literal('unix'),
  path: Qapi.str({ description: 'path of the Unix socket' }),
});

export const SocketAddress = Qapi.flatUnion('SocketAddress', 'type', [InetSocketAddress, UnixSocketAddress], {
  description: "the server's address: `{type: 'unix', path}` or `{type: 'inet', host, port}`",
});

export type NbdServerAddress = Static<typeof SocketAddress>;

export const nbdOptions = Qapi.struct('BlockdevOptionsNbd', {
  server: SocketAddress,
  export: Qapi.optional(Qapi.str({ description: 'export name (the empty string names the default export)', default: '' })),
  'tls-creds': Qapi.optional(
    Qapi.str({ description: 'id of client TLS credentials (a tls-creds-psk or tls-creds-x509 object): TLS is required' }),
  ),
  'tls-hostname': Qapi.optional(
    Qapi.str({ description: 'name the server certificate must carry (with tls-creds; default: the inet host)' }),
  ),
  'x-dirty-bitmap': Qapi.optional(
    Qapi.str({ description: 'meta context to read as block status instead of base:allocation, e.g. qemu:dirty-bitmap:NAME' }),
  ),
  'reconnect-delay': Qapi.optional(
    Qapi.uint32({
      description: 'seconds requests wait for a reconnect after the connection is lost (0: they fail at once)',
      default: 0,
    }),
  ),
  'open-timeout': Qapi.optional(
    Qapi.uint32({ description: 'seconds to keep trying to connect when opening (0: one attempt)', default: 0 }),
  ),
});

export type NbdOptions = Static<typeof nbdOptions>;
