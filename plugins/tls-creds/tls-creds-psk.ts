/**
 * tls-creds-psk: pre-shared keys from DIR/keys.psk, in the format of
 * GnuTLS's psktool (`username:hexkey` lines), as QEMU reads them. The client
 * side looks its key up when the object is created (QEMU's errors); the
 * server side reads the file at each handshake, as GnuTLS does, so keys can
 * be added without recreating the object.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { BlockLayerError, systemErrorText } from '../../core/errors.js';
import type { ObjectTypeContribution } from '../../core/objects/object-type-contribution.js';
import type { TlsCreds, TlsSocketOptions } from '../../core/objects/user-object.js';
import { credsPath, CREDS_FILES, PSK_CIPHERS, requireDir, TLS_MIN_VERSION } from './creds-files.js';
import { type TlsCredsPskProps, tlsCredsPskProperties } from './options.js';

/** A hex key as GnuTLS decodes it, or GnuTLS's error text. */
function decodeKey(hex: string): Buffer | string {
  if (hex === '') return 'The request is invalid.';
  if (!/^([0-9a-fA-F]{2})+$/.test(hex)) return 'Error in parsing.';
  return Buffer.from(hex, 'hex');
}

/** The hex key of `username` in a keys.psk text (the first matching line), if any. */
export function findPskKey(text: string, username: string): string | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${username}:`)) return line.slice(username.length + 1);
  }
  return undefined;
}

class PskCreds implements TlsCreds {
  readonly qomType = 'tls-creds-psk';

  constructor(
    readonly id: string,
    readonly endpoint: 'client' | 'server',
    readonly verifyPeer: boolean,
    /** Client: the identity and key sent. */
    private readonly client: { identity: string; key: Buffer } | undefined,
    /** Server: the keys file, read at each handshake; DH parameters if the directory has them. */
    private readonly server: { pskFile: string; dhParams: Buffer | undefined } | undefined,
  ) {}

  tlsOptions(): TlsSocketOptions {
    const common = { ciphers: PSK_CIPHERS, minVersion: TLS_MIN_VERSION } as const;
    if (this.client !== undefined) {
      const { identity, key } = this.client;
      // No certificate to check: the key proves who the server is.
      return { ...common, pskCallback: () => ({ identity, psk: key }), checkServerIdentity: () => undefined };
    }
    const { pskFile, dhParams } = this.server!;
    return { ...common, dhparam: dhParams ?? 'auto', pskCallback: (_socket: unknown, identity: string) => serverKey(pskFile, identity) };
  }
}

/** The server's key for `identity`; null (the handshake fails) if there is none or it cannot be read. */
function serverKey(pskFile: string, identity: string): Buffer | null {
  let text: string;
  try {
    text = readFileSync(pskFile, 'utf8');
  } catch {
    return null;
  }
  const hex = findPskKey(text, identity);
  const key = hex === undefined ? undefined : decodeKey(hex);
  return Buffer.isBuffer(key) ? key : null;
}

async function createPsk(props: TlsCredsPskProps): Promise<TlsCreds> {
  const dir = requireDir(props.dir);
  const endpoint = props.endpoint ?? 'client';
  const verifyPeer = props['verify-peer'] ?? true;
  const pskFile = (await credsPath(dir, CREDS_FILES.psk, true))!;
  if (endpoint === 'server') {
    const dhFile = await credsPath(dir, CREDS_FILES.dhParams, false);
    const dhParams = dhFile === undefined ? undefined : await readFile(dhFile);
    return new PskCreds(props.id, endpoint, verifyPeer, undefined, { pskFile, dhParams });
  }
  const username = props.username ?? 'qemu';
  const text = await readFile(pskFile, 'utf8').catch((error: unknown) => {
    throw new BlockLayerError(`Cannot read PSK file ${pskFile}: ${systemErrorText(error)}`);
  });
  const hex = findPskKey(text, username);
  if (hex === undefined) throw new BlockLayerError(`Username ${username} not found in PSK file ${pskFile}`);
  const key = decodeKey(hex);
  if (!Buffer.isBuffer(key)) throw new BlockLayerError(`Cannot set PSK client credentials: ${key}`);
  return new PskCreds(props.id, endpoint, verifyPeer, { identity: username, key }, undefined);
}

export const tlsCredsPsk: ObjectTypeContribution<TlsCredsPskProps> = {
  qomType: 'tls-creds-psk',
  summary: 'TLS credentials from pre-shared keys (DIR/keys.psk)',
  schema: tlsCredsPskProperties,
  create: createPsk,
};
