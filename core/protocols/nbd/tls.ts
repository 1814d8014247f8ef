/**
 * TLS on an NBD connection after NBD_OPT_STARTTLS (both sides): the plain
 * socket is handed to Node's TLS, with what the credentials object says
 * (PSK callbacks or certificates, ciphers, versions). Each helper resolves
 * once the handshake is complete and the peer verified; on failure (wrong
 * key, untrusted certificate, peer gone, timeout) it rejects with a
 * TlsHandshakeError ("TLS handshake failed: …", as QEMU words it) and
 * destroys the socket, so a caller never talks plain text after STARTTLS.
 * A certificate the client does not accept is reported as QEMU reports it,
 * without the prefix ("The certificate hasn't got a known issuer").
 */
import { isIP, type Socket } from 'node:net';
import { checkServerIdentity, connect, type ConnectionOptions, type PeerCertificate, TLSSocket, type TLSSocketOptions } from 'node:tls';
import { BlockLayerError } from '../../errors.js';
import type { TlsCreds } from '../../objects/user-object.js';

/** How long a handshake may take unless the caller says otherwise (QEMU 7.2 has no limit; a stalled peer must not hang us). */
export const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** TLS could not be set up: the handshake failed, or the peer's certificate was not accepted. */
export class TlsHandshakeError extends BlockLayerError {
  constructor(message: string) {
    super(message);
    this.name = 'TlsHandshakeError';
  }
}

export interface TlsHandshakeOptions {
  /** Give up after this long (0: never). Default DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS. */
  timeoutMs?: number;
}

/** The code of our own check's error when there is no name to check a certificate against. */
const NO_HOSTNAME = 'ERR_TLS_NO_HOSTNAME';

/** What the peer's certificate check found, in QEMU's words (crypto/tlssession.c); reported without a prefix, as QEMU does. */
const CERTIFICATE_PROBLEMS: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "The certificate hasn't got a known issuer",
  UNABLE_TO_GET_ISSUER_CERT: "The certificate hasn't got a known issuer",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "The certificate hasn't got a known issuer",
  SELF_SIGNED_CERT_IN_CHAIN: "The certificate hasn't got a known issuer",
  DEPTH_ZERO_SELF_SIGNED_CERT: "The certificate hasn't got a known issuer",
  CERT_HAS_EXPIRED: 'The certificate has expired',
  CERT_NOT_YET_VALID: 'The certificate is not yet activated',
  CERT_REVOKED: 'The certificate has been revoked',
  CERT_SIGNATURE_FAILURE: 'The certificate is not trusted',
  CERT_UNTRUSTED: 'The certificate is not trusted',
  CERT_REJECTED: 'The certificate is not trusted',
};

/** What goes wrong in a handshake (OpenSSL's codes), in words a user can act on; after "TLS handshake failed: ". */
const HANDSHAKE_PROBLEMS: Record<string, string> = {
  ECONNRESET: 'the peer closed the connection (wrong key or credentials?)',
  EPIPE: 'the peer closed the connection (wrong key or credentials?)',
  ERR_SSL_BINDER_DOES_NOT_VERIFY: 'the client used a different pre-shared key',
  ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC: 'the peer used a different pre-shared key',
  ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR: 'the peer used a different pre-shared key',
  ERR_SSL_SSLV3_ALERT_ILLEGAL_PARAMETER: 'the peer refused our key (unknown PSK username, or a different key?)',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_PSK_IDENTITY: 'the peer does not know our PSK username',
  ERR_SSL_NO_SHARED_CIPHER: 'no cipher suite in common (PSK credentials on one side only?)',
  ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE: 'the peer refused the handshake (no credentials or cipher suite in common?)',
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: 'the server requires a client certificate (client-cert.pem)',
  ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE: 'the client sent no certificate',
  ERR_SSL_CERTIFICATE_VERIFY_FAILED: 'the peer certificate is not signed by our CA',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: 'the peer does not trust our certificate (signed by another CA?)',
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: 'the peer does not accept our certificate',
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED: 'the peer says our certificate has expired',
};

/** An error raised on a TLS socket, as the message QEMU would give (or a clear one where QEMU's is GnuTLS's). */
export function describeTlsError(error: Error & { code?: string }, hostname?: string): string {
  const code = error.code ?? '';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `Certificate does not match the hostname ${hostname ?? ''}`.trimEnd();
  if (code === NO_HOSTNAME) return error.message;
  const problem = CERTIFICATE_PROBLEMS[code];
  if (problem !== undefined) return problem;
  const reason = HANDSHAKE_PROBLEMS[code] ?? error.message.split('\n')[0]!.replace(/^[0-9A-F]+:error:[0-9A-F]+:SSL routines:[^:]*:/, '');
  return `TLS handshake failed: ${reason}`;
}

/**
 * Settles once: resolves with the TLS socket when `done` fires, rejects with
 * a TlsHandshakeError (destroying both sockets) on error, close or timeout.
 */
function handshake(
  plain: Socket,
  tlsSocket: TLSSocket,
  doneEvent: 'secure' | 'secureConnect',
  options: TlsHandshakeOptions,
  describe: (error: Error) => string,
  check: () => string | undefined,
): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS;
    const timer = timeoutMs > 0 ? setTimeout(() => fail(`TLS handshake failed: no handshake within ${timeoutMs} ms`), timeoutMs) : undefined;
    const cleanup = () => {
      clearTimeout(timer);
      tlsSocket.off(doneEvent, onDone);
      tlsSocket.off('error', onError);
      tlsSocket.off('close', onClose);
    };
    const fail = (message: string) => {
      cleanup();
      // Errors after the failure (a late ECONNRESET) must not become unhandled.
      tlsSocket.on('error', () => undefined);
      tlsSocket.destroy();
      plain.destroy();
      reject(new TlsHandshakeError(message));
    };
    const onError = (error: Error) => fail(describe(error));
    const onClose = () => fail('TLS handshake failed: the peer closed the connection');
    const onDone = () => {
      const problem = check();
      if (problem !== undefined) return fail(problem);
      cleanup();
      resolve(tlsSocket);
    };
    tlsSocket.once(doneEvent, onDone);
    tlsSocket.once('error', onError);
    tlsSocket.once('close', onClose);
  });
}

/**
 * The server side: upgrades an accepted socket once NBD_OPT_STARTTLS has
 * been acknowledged. The caller must have stopped reading from `socket`
 * (its 'data' listeners removed): the TLS layer takes the socket over.
 */
export function serverTlsSocket(socket: Socket, creds: TlsCreds, options: TlsHandshakeOptions = {}): Promise<TLSSocket> {
  if (creds.endpoint !== 'server') {
    return Promise.reject(new BlockLayerError('Expected TLS credentials for a server endpoint'));
  }
  const tlsOptions = creds.tlsOptions();
  const tlsSocket = new TLSSocket(socket, { ...tlsOptions, isServer: true } as TLSSocketOptions);
  return handshake(socket, tlsSocket, 'secure', options, (error) => describeTlsError(error), () => {
    // OpenSSL checked the client certificate during the handshake (requestCert + rejectUnauthorized); this only makes sure one came.
    const required = tlsOptions.requestCert === true && tlsOptions.rejectUnauthorized !== false;
    if (required && Object.keys(tlsSocket.getPeerCertificate()).length === 0) return 'TLS handshake failed: the client sent no certificate';
    return undefined;
  });
}

/**
 * The client side: starts TLS on `socket` right after the server
 * acknowledged NBD_OPT_STARTTLS. `hostname` is what an X.509 server
 * certificate must name (QEMU's tls-hostname, else the inet host); without
 * one a certificate cannot be checked, and QEMU refuses it ("No hostname
 * for certificate validation") unless verify-peer is off. PSK credentials
 * have no certificate to check.
 */
export function clientTlsSocket(socket: Socket, creds: TlsCreds, hostname?: string, options: TlsHandshakeOptions = {}): Promise<TLSSocket> {
  if (creds.endpoint !== 'client') {
    return Promise.reject(new BlockLayerError('Expected TLS credentials for a client endpoint'));
  }
  const tlsOptions = creds.tlsOptions();
  const named = hostname !== undefined && hostname !== '';
  const tlsSocket = connect({
    checkServerIdentity: (_host: string, cert: PeerCertificate) =>
      named ? checkServerIdentity(hostname, cert) : Object.assign(new Error('No hostname for certificate validation'), { code: NO_HOSTNAME }),
    ...(tlsOptions as ConnectionOptions),
    socket,
    // SNI takes names only; an address is still checked against the certificate above.
    ...(named && isIP(hostname) === 0 ? { servername: hostname } : {}),
  });
  return handshake(socket, tlsSocket, 'secureConnect', options, (error) => describeTlsError(error, hostname), () => undefined);
}
