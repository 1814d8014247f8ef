/**
 * The checks QEMU's `sanity-check` runs on X.509 credentials when they are
 * loaded (crypto/tlscredsx509.c), with its messages: validity dates and
 * basic constraints of our certificate and of each CA certificate, then
 * that a CA in ca-cert.pem issued our certificate. Key usage and purpose
 * are not checked (Node does not say whether those extensions are
 * critical, which is what decides QEMU's verdict).
 */
import { X509Certificate } from 'node:crypto';
import { BlockLayerError } from '../../core/errors.js';

/** Every PEM certificate block in `text`. */
export function pemBlocks(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
}

/** The certificates of a CA list file, or QEMU's error when it holds none that parse. */
export function parseCaList(text: string, path: string): X509Certificate[] {
  try {
    const certs = pemBlocks(text).map((pem) => new X509Certificate(pem));
    if (certs.length > 0) return certs;
  } catch {
    // Worded below.
  }
  throw new BlockLayerError(`Unable to import CA certificate list ${path}`);
}

/** Our own certificate, or QEMU's error when it does not parse. */
export function parseCert(text: string, path: string, isServer: boolean): X509Certificate {
  try {
    return new X509Certificate(text);
  } catch (error) {
    const reason = (error as Error).message;
    throw new BlockLayerError(`Unable to import ${isServer ? 'server' : 'client'} certificate ${path}: ${reason}`);
  }
}

function checkTimes(cert: X509Certificate, path: string, isServer: boolean, isCA: boolean, now: number): void {
  const whose = isCA ? 'CA' : isServer ? 'server' : 'client';
  if (Date.parse(cert.validTo) < now) throw new BlockLayerError(`The ${whose} certificate ${path} has expired`);
  if (Date.parse(cert.validFrom) > now) throw new BlockLayerError(`The ${whose} certificate ${path} is not yet active`);
}

function checkBasicConstraints(cert: X509Certificate, path: string, isServer: boolean, isCA: boolean): void {
  if (cert.ca && !isCA) {
    throw new BlockLayerError(`The certificate ${path} basic constraints show a CA, but we need one for a ${isServer ? 'server' : 'client'}`);
  }
  if (!cert.ca && isCA) throw new BlockLayerError(`The certificate ${path} basic constraints do not show a CA`);
}

/** QEMU's qcrypto_tls_creds_x509_sanity_check, for what Node can see. */
export function sanityCheck(
  cas: readonly X509Certificate[],
  caPath: string,
  cert: { cert: X509Certificate; path: string } | undefined,
  isServer: boolean,
  now = Date.now(),
): void {
  if (cert !== undefined) {
    checkTimes(cert.cert, cert.path, isServer, false, now);
    checkBasicConstraints(cert.cert, cert.path, isServer, false);
  }
  for (const ca of cas) {
    checkTimes(ca, caPath, isServer, true, now);
    checkBasicConstraints(ca, caPath, isServer, true);
  }
  if (cert !== undefined && cas.length > 0) {
    const issued = cas.some((ca) => cert.cert.checkIssued(ca) && cert.cert.verify(ca.publicKey));
    if (!issued) {
      throw new BlockLayerError(`Our own certificate ${cert.path} failed validation against ${caPath}: The certificate hasn't got a known issuer`);
    }
  }
}
