/**
 * Properties of the TLS credentials types, in QEMU 7.2's order
 * (TlsCredsProperties, then the type's own), as object-add and --object
 * take them.
 */
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const TlsCredsEndpoint = Qapi.enum('QCryptoTLSCredsEndpoint', ['client', 'server'], {
  description: 'which side of the connection the credentials are for',
  default: 'client',
});

const base = {
  'verify-peer': Qapi.optional(
    Qapi.bool({ description: "check the peer's certificate: CA, dates, host name (x509; psk keys prove themselves)", default: true }),
  ),
  dir: Qapi.optional(Qapi.str({ description: 'directory holding the credential files (required)' })),
  endpoint: Qapi.optional(TlsCredsEndpoint),
  priority: Qapi.optional(
    Qapi.str({ description: 'a GnuTLS priority string; accepted for compatibility, not applied (Node uses OpenSSL)' }),
  ),
};

export const tlsCredsPskProperties = Qapi.struct('TlsCredsPskProperties', {
  ...base,
  username: Qapi.optional(Qapi.str({ description: 'PSK identity the client sends (client side)', default: 'qemu' })),
});

export const tlsCredsX509Properties = Qapi.struct('TlsCredsX509Properties', {
  ...base,
  'sanity-check': Qapi.optional(
    Qapi.bool({ description: 'check the certificates when loading them (dates, CA flags, signed by the CA)', default: true }),
  ),
  passwordid: Qapi.optional(Qapi.str({ description: 'id of a secret decrypting the private key (not supported: refused)' })),
});

export type TlsCredsPskProps = Static<typeof tlsCredsPskProperties> & { id: string };
export type TlsCredsX509Props = Static<typeof tlsCredsX509Properties> & { id: string };
