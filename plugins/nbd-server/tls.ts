/**
 * TLS for the NBD server: the `tls-creds` object nbd-server-start names
 * (found in the layer's objects, with QEMU's errors), and the socket
 * upgrade after NBD_OPT_STARTTLS (core/protocols/nbd/tls.ts).
 */
import type net from 'node:net';
import { BlockLayerError } from '../../core/errors.js';
import { isTlsCreds, type TlsCreds, type UserObject } from '../../core/objects/user-object.js';
import { serverTlsSocket } from '../../core/protocols/nbd/tls.js';

/** The server credentials `id` names, or QEMU 7.2's error (blockdev-nbd.c). */
export function resolveTlsCreds(objects: { get(id: string): UserObject | undefined }, id: string): TlsCreds {
  const object = objects.get(id);
  if (object === undefined) throw new BlockLayerError(`No TLS credentials with id '${id}'`);
  if (!isTlsCreds(object)) throw new BlockLayerError(`Object with id '${id}' is not TLS credentials`);
  if (object.endpoint !== 'server') throw new BlockLayerError('Expected TLS credentials for a server endpoint');
  return object;
}

/** Runs the TLS handshake over `socket` (server side); rejects if it fails (the socket is then destroyed). */
export function startTls(socket: net.Socket, creds: TlsCreds): Promise<net.Socket> {
  return serverTlsSocket(socket, creds);
}
