/**
 * tls-creds-x509: certificates from DIR, with QEMU's file names. A server
 * needs ca-cert.pem, server-cert.pem and server-key.pem (ca-crl.pem and
 * dh-params.pem if present) and, with verify-peer, asks clients for a
 * certificate signed by the CA; a client needs ca-cert.pem, and presents
 * client-cert.pem/client-key.pem if present. Files are read when the object
 * is created, as QEMU does; the TLS context is built then, so a key that
 * does not match its certificate fails object-add, not the first connection.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext, type SecureContext } from 'node:tls';
import { BlockLayerError } from '../../core/errors.js';
import type { ObjectTypeContribution } from '../../core/objects/object-type-contribution.js';
import type { TlsCreds, TlsSocketOptions } from '../../core/objects/user-object.js';
import { credsPath, CREDS_FILES, requireDir, TLS_MIN_VERSION } from './creds-files.js';
import { type TlsCredsX509Props, tlsCredsX509Properties } from './options.js';
import { parseCaList, parseCert, pemBlocks, sanityCheck } from './x509-sanity.js';

class X509Creds implements TlsCreds {
  readonly qomType = 'tls-creds-x509';

  constructor(
    readonly id: string,
    readonly endpoint: 'client' | 'server',
    readonly verifyPeer: boolean,
    private readonly context: SecureContext,
  ) {}

  tlsOptions(): TlsSocketOptions {
    const common = { secureContext: this.context, minVersion: TLS_MIN_VERSION, rejectUnauthorized: this.verifyPeer } as const;
    return this.endpoint === 'server' ? { ...common, requestCert: this.verifyPeer } : common;
  }
}

/** Checks that `key` is the private key of `cert` (OpenSSL does not when the key is set first), as GnuTLS does on load. */
function checkKeyPair(cert: string, key: Buffer): void {
  let matches: boolean;
  try {
    matches = new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch (error) {
    throw new Error(((error as Error).message).replace(/^error:[0-9A-F]+:[^:]*:[^:]*:/, ''));
  }
  if (!matches) throw new Error('The certificate and the given key do not match.');
}

interface X509Files {
  ca: string;
  crl: string | undefined;
  cert: string | undefined;
  key: string | undefined;
  dhParams: string | undefined;
}

/** The files, checked in QEMU's order (qcrypto_tls_creds_x509_load). */
async function findFiles(dir: string, server: boolean): Promise<X509Files> {
  const ca = (await credsPath(dir, CREDS_FILES.caCert, true))!;
  if (server) {
    const crl = await credsPath(dir, CREDS_FILES.caCrl, false);
    const cert = await credsPath(dir, CREDS_FILES.serverCert, true);
    const key = await credsPath(dir, CREDS_FILES.serverKey, true);
    const dhParams = await credsPath(dir, CREDS_FILES.dhParams, false);
    return { ca, crl, cert, key, dhParams };
  }
  const cert = await credsPath(dir, CREDS_FILES.clientCert, false);
  const key = await credsPath(dir, CREDS_FILES.clientKey, false);
  return { ca, crl: undefined, cert, key, dhParams: undefined };
}

async function createX509(props: TlsCredsX509Props): Promise<TlsCreds> {
  const dir = requireDir(props.dir);
  const endpoint = props.endpoint ?? 'client';
  const server = endpoint === 'server';
  if (props.passwordid !== undefined) {
    throw new BlockLayerError(`passwordid '${props.passwordid}': encrypted private keys are not supported (no secret objects)`);
  }
  const files = await findFiles(dir, server);
  const caText = await readFile(files.ca, 'utf8');
  const certText = files.cert === undefined ? undefined : await readFile(files.cert, 'utf8');
  if (props['sanity-check'] ?? true) {
    const cert = certText === undefined ? undefined : { cert: parseCert(certText, files.cert!, server), path: files.cert! };
    sanityCheck(parseCaList(caText, files.ca), files.ca, cert, server);
  }
  const pair = certText === undefined || files.key === undefined ? undefined : { cert: certText, key: await readFile(files.key) };
  let context: SecureContext;
  try {
    if (pair !== undefined) checkKeyPair(pair.cert, pair.key);
    context = createSecureContext({
      // Unchecked garbage trusts nothing (GnuTLS loads zero certificates from it; so does QEMU, silently).
      ca: pemBlocks(caText),
      ...(files.crl === undefined ? {} : { crl: await readFile(files.crl) }),
      ...(pair ?? {}),
      ...(server ? { dhparam: files.dhParams === undefined ? 'auto' : await readFile(files.dhParams) } : {}),
    });
  } catch (error) {
    throw new BlockLayerError(`Cannot load certificate '${files.cert}' & key '${files.key}': ${(error as Error).message}`);
  }
  return new X509Creds(props.id, endpoint, props['verify-peer'] ?? true, context);
}

export const tlsCredsX509: ObjectTypeContribution<TlsCredsX509Props> = {
  qomType: 'tls-creds-x509',
  summary: 'TLS credentials from X.509 certificates (DIR/ca-cert.pem …)',
  schema: tlsCredsX509Properties,
  create: createX509,
};
