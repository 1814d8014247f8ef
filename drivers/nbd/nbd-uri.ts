/**
 * NBD URIs (NetworkBlockDevice/nbd doc/uri.md): `nbd://host[:port]/export`
 * and `nbd+unix:///export?socket=PATH`, turned into the driver's
 * structured options, and the pseudo-filename QEMU shows for a node.
 */
import { NBD_DEFAULT_PORT } from '../../core/protocols/nbd/constants.js';
import { BlockLayerError } from '../../core/errors.js';
import type { NbdServerAddress } from './options.js';

export interface NbdUriOptions {
  server: NbdServerAddress;
  /** Absent when the URI names no export (the default export, ''). */
  export?: string;
}

const URI = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?$/;

function invalid(uri: string, reason: string): BlockLayerError {
  return new BlockLayerError(`Invalid NBD URI '${uri}': ${reason}`);
}

function decode(uri: string, text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw invalid(uri, `bad percent-encoding in '${text}'`);
  }
}

/** `[v6]:port` or `host:port`, either part optional. */
function splitAuthority(uri: string, authority: string): { host: string; port: string | undefined } {
  const hostPort = authority.slice(authority.lastIndexOf('@') + 1);
  const match = /^(\[[^\]]*\]|[^:]*)(?::(\d*))?$/.exec(hostPort);
  if (match === null) throw invalid(uri, `bad host '${hostPort}'`);
  const host = match[1]!.startsWith('[') ? match[1]!.slice(1, -1) : decode(uri, match[1]!);
  return { host, port: match[2] === '' ? undefined : match[2] };
}

/** Query parameters; unknown keys are ignored (as libnbd does), `+` is a plus, not a space. */
function queryParameters(uri: string, query: string | undefined): Map<string, string> {
  const params = new Map<string, string>();
  for (const pair of (query ?? '').split('&').filter(Boolean)) {
    const eq = pair.indexOf('=');
    const key = decode(uri, eq < 0 ? pair : pair.slice(0, eq));
    params.set(key, eq < 0 ? '' : decode(uri, pair.slice(eq + 1)));
  }
  return params;
}

/**
 * Parses an NBD URI into `server` and `export` options. Schemes are QEMU's
 * (`nbd`, `nbd+tcp`, `nbd+unix`); `nbds…` (TLS) is refused, as QEMU has no
 * such scheme (TLS comes from `tls-creds`). The
 * export is the path minus one leading `/`, percent-decoded.
 */
export function parseNbdUri(uri: string): NbdUriOptions {
  const match = URI.exec(uri);
  if (match === null) throw invalid(uri, 'not of the form scheme://[host[:port]]/[export][?query]');
  const [, rawScheme, authority = '', path = '', query] = match;
  const scheme = rawScheme!.toLowerCase();
  if (scheme.startsWith('nbds')) throw invalid(uri, 'TLS (nbds) URIs are not supported (QEMU has none either): use tls-creds');
  if (scheme !== 'nbd' && scheme !== 'nbd+tcp' && scheme !== 'nbd+unix') throw invalid(uri, `unknown scheme '${scheme}'`);
  const params = queryParameters(uri, query);
  const exportName = decode(uri, path.startsWith('/') ? path.slice(1) : path);
  const result = (server: NbdServerAddress): NbdUriOptions => (exportName === '' ? { server } : { server, export: exportName });

  if (scheme === 'nbd+unix') {
    if (authority !== '') throw invalid(uri, 'a host is not allowed with nbd+unix');
    const socket = params.get('socket');
    if (socket === undefined || socket === '') throw invalid(uri, "nbd+unix needs '?socket=PATH'");
    return result({ type: 'unix', path: socket });
  }
  if (params.has('socket')) throw invalid(uri, `the socket parameter is incompatible with ${scheme}:`);
  const { host, port } = splitAuthority(uri, authority);
  if (host === '') throw invalid(uri, 'no host given');
  if (port !== undefined && Number(port) > 65535) throw invalid(uri, `bad port '${port}'`);
  return result({ type: 'inet', host, port: port ?? String(NBD_DEFAULT_PORT) });
}

/**
 * The filename QEMU's nbd_refresh_filename makes: `nbd+unix:///exp?socket=PATH`,
 * `nbd://host:port/exp`, or without `/exp` when no export was given.
 * Names are not percent-encoded, as in QEMU.
 */
export function nbdFilename(server: NbdServerAddress, exportName: string | undefined): string {
  if (server.type === 'unix') {
    return exportName === undefined ? `nbd+unix://?socket=${server.path}` : `nbd+unix:///${exportName}?socket=${server.path}`;
  }
  const hostPort = `${server.host}:${server.port}`;
  return exportName === undefined ? `nbd://${hostPort}` : `nbd://${hostPort}/${exportName}`;
}
