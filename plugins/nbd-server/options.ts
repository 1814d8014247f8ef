/**
 * Arguments of the NBD server's commands and options, in QEMU 7.2's member
 * order (it decides which problem is reported first): nbd-server-start
 * (SocketAddressLegacy: `{type, data: {…}}`), qemu-storage-daemon's
 * `--nbd-server` (NbdServerOptions: the flat SocketAddress), block-export-add
 * (BlockExportOptions; only the nbd type exists here), the deprecated
 * nbd-server-add/-remove, block-export-del and query-block-exports.
 */
import { BlockDirtyBitmapOrStr } from '../../core/bitmap/bitmap-schema.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';

const InetSocketAddress = {
  host: Qapi.str({ description: 'host name or IP address to listen on' }),
  port: Qapi.str({ description: 'port number or service name (a string, as in QEMU); "0" picks a free port' }),
  numeric: Qapi.optional(Qapi.bool({ description: 'accepted as in QEMU; names are resolved either way' })),
  to: Qapi.optional(Qapi.uint16({ description: 'accepted as in QEMU; the port is not searched upwards' })),
  ipv4: Qapi.optional(Qapi.bool({ description: 'accepted as in QEMU' })),
  ipv6: Qapi.optional(Qapi.bool({ description: 'accepted as in QEMU' })),
  'keep-alive': Qapi.optional(Qapi.bool({ description: 'enable TCP keep-alive on client connections', default: false })),
  mptcp: Qapi.optional(Qapi.bool({ description: 'accepted as in QEMU; refused if on' })),
};
const UnixSocketAddress = {
  path: Qapi.str({ description: 'path of the Unix socket' }),
  abstract: Qapi.optional(Qapi.bool({ description: 'an abstract socket (Linux): `path` names it, no file is made', default: false })),
  tight: Qapi.optional(Qapi.bool({ description: 'accepted as in QEMU', default: true })),
};
const VsockSocketAddress = { cid: Qapi.str(), port: Qapi.str() };
const FdSocketAddress = { str: Qapi.str() };

/** QEMU's SocketAddressLegacy (nbd-server-start's `addr`): the address members inside `data`. */
export const SocketAddressLegacy = Qapi.flatUnion(
  'SocketAddressLegacy',
  'type',
  [
    Qapi.struct('InetSocketAddressWrapper', { type: Qapi.literal('inet'), data: Qapi.struct('InetSocketAddress', InetSocketAddress) }),
    Qapi.struct('UnixSocketAddressWrapper', { type: Qapi.literal('unix'), data: Qapi.struct('UnixSocketAddress', UnixSocketAddress) }),
    Qapi.struct('VsockSocketAddressWrapper', { type: Qapi.literal('vsock'), data: Qapi.struct('VsockSocketAddress', VsockSocketAddress) }),
    Qapi.struct('StringWrapper', { type: Qapi.literal('fd'), data: Qapi.struct('String', FdSocketAddress) }),
  ],
  { description: '`{type: "unix", data: {path}}` or `{type: "inet", data: {host, port}}` (vsock and fd are refused)' },
);

/** QEMU's SocketAddress (the `--nbd-server` form): the same members, flat. */
export const SocketAddress = Qapi.flatUnion(
  'SocketAddress',
  'type',
  [
    Qapi.struct('SocketAddressInet', { type: Qapi.literal('inet'), ...InetSocketAddress }),
    Qapi.struct('SocketAddressUnix', { type: Qapi.literal('unix'), ...UnixSocketAddress }),
    Qapi.struct('SocketAddressVsock', { type: Qapi.literal('vsock'), ...VsockSocketAddress }),
    Qapi.struct('SocketAddressFd', { type: Qapi.literal('fd'), ...FdSocketAddress }),
  ],
  { description: '`addr.type=unix,addr.path=…` or `addr.type=inet,addr.host=…,addr.port=…`' },
);

const serverCommon = {
  'tls-creds': Qapi.optional(Qapi.str({ description: 'id of tls-creds-* object (endpoint=server): clients must use TLS' })),
  'tls-authz': Qapi.optional(Qapi.str({ description: 'id of an authorization object (not supported: refused)' })),
  'max-connections': Qapi.optional(
    Qapi.uint32({ description: 'clients served at once (0: no limit); more wait until one leaves', default: 0 }),
  ),
};

export const NbdServerStart = Qapi.struct('q_obj_nbd-server-start-arg', { addr: SocketAddressLegacy, ...serverCommon });

/** The name the CLI form is registered under with the validator (bin/daemon looks it up by name). */
export const NBD_SERVER_OPTIONS = 'NbdServerOptions';
export const NbdServerOptions = Qapi.struct(NBD_SERVER_OPTIONS, { addr: SocketAddress, ...serverCommon });

export const BlockExportType = Qapi.enum('BlockExportType', ['nbd']);

/** BlockExportOptions, base members then the nbd branch's (BlockExportOptionsNbd). */
export const BlockExportOptionsNbd = Qapi.struct('BlockExportOptionsNbd', {
  type: { ...Qapi.literal('nbd'), description: 'the export type: nbd (the only one here)' },
  id: Qapi.str({ description: 'the export id (block-export-del, query-block-exports, BLOCK_EXPORT_DELETED)' }),
  'fixed-iothread': Qapi.optional(Qapi.bool({ description: 'accepted as in QEMU (there are no iothreads)', default: false })),
  iothread: Qapi.optional(Qapi.str({ description: 'there are no iothreads: any name is refused' })),
  'node-name': Qapi.str({ description: 'the node to export' }),
  writable: Qapi.optional(Qapi.bool({ description: 'clients may write (the node must be writable)', default: false })),
  writethrough: Qapi.optional(Qapi.bool({ description: 'every write is flushed before it is answered', default: false })),
  name: Qapi.optional(Qapi.str({ description: 'the NBD export name; default: the node name' })),
  description: Qapi.optional(Qapi.str({ description: 'free text sent as NBD_INFO_DESCRIPTION and in NBD_OPT_LIST' })),
  bitmaps: Qapi.optional(
    Qapi.list(BlockDirtyBitmapOrStr, {
      description: 'dirty bitmaps to offer as qemu:dirty-bitmap:NAME contexts: a name (on the node or down its backing chain) or {node, name}',
    }),
  ),
  'allocation-depth': Qapi.optional(Qapi.bool({ description: 'offer the qemu:allocation-depth context', default: false })),
});
export const BlockExportOptions = Qapi.flatUnion('BlockExportOptions', 'type', [BlockExportOptionsNbd]);

export const NbdServerAdd = Qapi.struct('NbdServerAddOptions', {
  name: Qapi.optional(Qapi.str({ description: 'the export name and id; default: `device`' })),
  description: Qapi.optional(Qapi.str({ description: 'free text sent as NBD_INFO_DESCRIPTION' })),
  device: Qapi.str({ description: 'the node or device to export' }),
  writable: Qapi.optional(Qapi.bool({ description: 'clients may write', default: false })),
  bitmap: Qapi.optional(Qapi.str({ description: 'a dirty bitmap to offer as qemu:dirty-bitmap:NAME' })),
});

export const BlockExportRemoveMode = Qapi.enum('BlockExportRemoveMode', ['safe', 'hard']);
const mode = Qapi.optional({
  ...BlockExportRemoveMode,
  description: 'safe: refuse while clients are connected; hard: disconnect them',
  default: 'safe',
});

export const BlockExportDel = Qapi.struct('q_obj_block-export-del-arg', { id: Qapi.str(), mode });
export const NbdServerRemove = Qapi.struct('q_obj_nbd-server-remove-arg', { name: Qapi.str(), mode });

export const BlockExportInfo = Qapi.struct('BlockExportInfo', {
  id: Qapi.str(),
  type: BlockExportType,
  'node-name': Qapi.str(),
  'shutting-down': Qapi.bool(),
});

export type SocketAddressLegacyValue = Static<typeof SocketAddressLegacy>;
export type SocketAddressValue = Static<typeof SocketAddress>;
export type NbdServerStartArgs = Static<typeof NbdServerStart>;
export type BlockExportArgs = Static<typeof BlockExportOptionsNbd>;
export type NbdServerAddArgs = Static<typeof NbdServerAdd>;
export type RemoveMode = Static<typeof BlockExportRemoveMode>;
export type BlockExportInfoValue = Static<typeof BlockExportInfo>;
