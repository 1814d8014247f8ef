/**
 * User-creatable objects (QEMU's QOM objects made with `object-add` or
 * `--object`): TLS credentials, secrets … An object type is contributed by a
 * plugin (object-type-contribution.ts); the ObjectRegistry holds the
 * instances by id, and other parts (the nbd driver, the NBD server) look
 * them up there by the id the user gave them.
 */
import type { ConnectionOptions, TlsOptions } from 'node:tls';

export interface UserObject {
  /** The object's id, unique among the layer's objects. */
  readonly id: string;
  /** The type it was created as (`tls-creds-psk`, `tls-creds-x509` …). */
  readonly qomType: string;
  /** Releases what the object holds; called by `object-del` and when the layer closes. */
  close?(): Promise<void>;
}

/**
 * Options for `tls.connect()` (client) or `new tls.TLSSocket(socket, { isServer: true, … })`
 * (server), whichever side the credentials are for. `pskCallback` has the
 * signature of that side (Node's two typings of it cannot be intersected).
 */
export type TlsSocketOptions = Omit<ConnectionOptions, 'pskCallback'> &
  Omit<TlsOptions, 'pskCallback'> & {
    pskCallback?: ConnectionOptions['pskCallback'] | TlsOptions['pskCallback'];
  };

/** TLS credentials (QEMU's TYPE_QCRYPTO_TLS_CREDS): what an NBD client or server needs for STARTTLS. */
export interface TlsCreds extends UserObject {
  /** Which side of a connection these credentials are for (QEMU's `endpoint`). */
  readonly endpoint: 'client' | 'server';
  /** Whether the peer must prove who it is (certificate, or for PSK the key itself). */
  readonly verifyPeer: boolean;
  /**
   * Options for the TLS socket: keys, certificates, PSK callbacks, protocol
   * versions and ciphers. For the client side, `servername` is left to the
   * caller (`tls-hostname`).
   */
  tlsOptions(): TlsSocketOptions;
}

/** Whether `o` is TLS credentials (any `tls-creds-*` type). */
export function isTlsCreds(o: UserObject): o is TlsCreds {
  const c = o as Partial<TlsCreds>;
  return (c.endpoint === 'client' || c.endpoint === 'server') && typeof c.tlsOptions === 'function';
}
