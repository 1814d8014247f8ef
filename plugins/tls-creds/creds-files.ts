/**
 * What both credential types share: the credential directory with QEMU's
 * file names and errors (crypto/tlscreds.c qcrypto_tls_creds_get_path),
 * and the TLS protocol settings that interoperate with GnuTLS peers.
 */
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { BlockLayerError, systemErrorText } from '../../core/errors.js';

/** QEMU's file names inside `dir`. */
export const CREDS_FILES = {
  psk: 'keys.psk',
  caCert: 'ca-cert.pem',
  caCrl: 'ca-crl.pem',
  serverCert: 'server-cert.pem',
  serverKey: 'server-key.pem',
  clientCert: 'client-cert.pem',
  clientKey: 'client-key.pem',
  dhParams: 'dh-params.pem',
} as const;

/**
 * TLS 1.2 is the oldest version QEMU's GnuTLS priority (NORMAL) still
 * negotiates by default; 1.3 is preferred, for PSK too (verified against
 * nbdkit/qemu-nbd/GnuTLS 3.7: TLS_CHACHA20_POLY1305_SHA256 or
 * TLS_AES_128_GCM_SHA256 with an external PSK).
 */
export const TLS_MIN_VERSION = 'TLSv1.2';

/**
 * Ciphers offered with PSK credentials. TLS 1.3 suites first (OpenSSL uses
 * a PSK from the callbacks with the SHA-256 ones); then TLS 1.2 PSK suites
 * for peers without 1.3 PSK: QEMU adds +ECDHE-PSK:+DHE-PSK:+PSK to its
 * GnuTLS priority, and each of the three kinds was verified against
 * gnutls-cli. Node's default list cannot be extended for this: it ends in
 * `!PSK`, which OpenSSL applies permanently.
 */
export const PSK_CIPHERS = [
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'TLS_AES_128_GCM_SHA256',
  'ECDHE-PSK-CHACHA20-POLY1305',
  'ECDHE-PSK-AES256-CBC-SHA384',
  'ECDHE-PSK-AES128-CBC-SHA256',
  'DHE-PSK-AES256-GCM-SHA384',
  'DHE-PSK-AES128-GCM-SHA256',
  'DHE-PSK-CHACHA20-POLY1305',
  'PSK-AES256-GCM-SHA384',
  'PSK-AES128-GCM-SHA256',
  'PSK-CHACHA20-POLY1305',
].join(':');

/** The directory, or QEMU's error when it was not given. */
export function requireDir(dir: string | undefined): string {
  if (dir === undefined) throw new BlockLayerError("Missing 'dir' property value");
  return dir;
}

/**
 * `dir/file` if it is readable; undefined for a missing optional file; else
 * QEMU's "Unable to access credentials PATH: strerror".
 */
export async function credsPath(dir: string, file: string, required: boolean): Promise<string | undefined> {
  const path = join(dir, file);
  try {
    await access(path, constants.R_OK);
    return path;
  } catch (error) {
    if (!required && (error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new BlockLayerError(`Unable to access credentials ${path}: ${systemErrorText(error)}`);
  }
}
