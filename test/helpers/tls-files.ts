/**
 * TLS credential directories for tests, in QEMU's layout: keys.psk files
 * written directly (psktool's format), and X.509 certificates made with
 * GnuTLS's certtool (ECDSA keys: fast to generate), the way QEMU's docs
 * make them: a CA, a server certificate for localhost/127.0.0.1 and a
 * client certificate, each in the directory its endpoint reads.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** Writes DIR/keys.psk with `username:hexkey` lines; returns the keys by user. */
export async function pskDir(dir: string, users: Record<string, string | Buffer> = { qemu: randomBytes(32) }): Promise<Record<string, string>> {
  await mkdir(dir, { recursive: true });
  const keys = Object.fromEntries(Object.entries(users).map(([user, key]) => [user, Buffer.isBuffer(key) ? key.toString('hex') : key]));
  await writeFile(join(dir, 'keys.psk'), Object.entries(keys).map(([user, hex]) => `${user}:${hex}\n`).join(''));
  return keys;
}

async function certtool(args: string[]): Promise<void> {
  await exec('certtool', args);
}

async function privateKey(path: string): Promise<void> {
  await certtool(['--generate-privkey', '--key-type', 'ecdsa', '--outfile', path]);
}

/** Signs a certificate for `keyFile` with `template` lines, by `ca` (or self-signed). */
async function certificate(dir: string, name: string, template: string[], ca?: { cert: string; key: string }): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}-key.pem`);
  const cert = join(dir, `${name}-cert.pem`);
  const info = join(dir, `${name}.info`);
  await privateKey(key);
  await writeFile(info, `${template.join('\n')}\n`);
  const signer = ca === undefined ? ['--generate-self-signed'] : ['--generate-certificate', '--load-ca-certificate', ca.cert, '--load-ca-privkey', ca.key];
  await certtool([...signer, '--load-privkey', key, '--template', info, '--outfile', cert]);
  return { cert, key };
}

export interface X509Dirs {
  /** ca-cert.pem, server-cert.pem, server-key.pem (for endpoint=server and nbdkit --tls-certificates). */
  server: string;
  /** ca-cert.pem, client-cert.pem, client-key.pem. */
  client: string;
  /** ca-cert.pem of another CA only (a client that trusts the wrong CA). */
  otherCa: string;
  /** A server directory whose certificate expired in 2011. */
  expired: string;
}

/** A CA, a server certificate (localhost, 127.0.0.1) and a client certificate, under `root`. */
export async function x509Dirs(root: string): Promise<X509Dirs> {
  const work = join(root, 'pki');
  const dirs: X509Dirs = { server: join(root, 'server'), client: join(root, 'client'), otherCa: join(root, 'other-ca'), expired: join(root, 'expired') };
  for (const dir of [work, ...Object.values(dirs)]) await mkdir(dir, { recursive: true });
  const ca = await certificate(work, 'ca', ['cn = blocklayer test CA', 'ca', 'cert_signing_key', 'expiration_days = 30']);
  const other = await certificate(work, 'other', ['cn = another CA', 'ca', 'cert_signing_key', 'expiration_days = 30']);
  const server = await certificate(
    work,
    'server',
    ['organization = blocklayer', 'cn = localhost', 'dns_name = localhost', 'ip_address = 127.0.0.1', 'tls_www_server', 'signing_key', 'expiration_days = 30'],
    ca,
  );
  const client = await certificate(work, 'client', ['organization = blocklayer', 'cn = client', 'tls_www_client', 'signing_key', 'expiration_days = 30'], ca);
  const old = await certificate(
    work,
    'old',
    ['cn = localhost', 'tls_www_server', 'signing_key', 'activation_date = "2010-01-01 00:00:00"', 'expiration_date = "2011-01-01 00:00:00"'],
    ca,
  );
  const place = async (dir: string, files: Record<string, string>) => {
    for (const [name, from] of Object.entries(files)) await copyFile(from, join(dir, name));
  };
  await place(dirs.server, { 'ca-cert.pem': ca.cert, 'server-cert.pem': server.cert, 'server-key.pem': server.key });
  await place(dirs.client, { 'ca-cert.pem': ca.cert, 'client-cert.pem': client.cert, 'client-key.pem': client.key });
  await place(dirs.otherCa, { 'ca-cert.pem': other.cert });
  await place(dirs.expired, { 'ca-cert.pem': ca.cert, 'server-cert.pem': old.cert, 'server-key.pem': old.key });
  return dirs;
}
