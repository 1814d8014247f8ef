/**
 * object-add of tls-creds-psk and tls-creds-x509: what loads, and what is
 * refused with which text. Every message was recorded from
 * qemu-storage-daemon 7.2's QMP monitor given the same files.
 */
import { mkdir, writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import { isTlsCreds, type TlsCreds } from '../../../core/objects/user-object.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';
import { pskDir, x509Dirs } from '../../helpers/tls-files.js';

async function setUp(t: Parameters<typeof tempDir>[0]): Promise<{ layer: BlockLayer; dir: string }> {
  const dir = await tempDir(t, 'blocklayer-tls-creds-');
  const layer = await createTestLayer({ plugins: ['tls-creds'] });
  t.teardown(() => layer.close());
  return { layer, dir };
}

const add = (layer: BlockLayer, qomType: string, props: Record<string, unknown>) => layer.execute('object-add', { 'qom-type': qomType, ...props });

test('tls-creds-psk: a client takes its key by username (default qemu); a server reads the file at each handshake', async (t) => {
  const { layer, dir } = await setUp(t);
  await pskDir(join(dir, 'psk'), { qemu: 'aa'.repeat(32), alice: 'bb'.repeat(16) });
  await add(layer, 'tls-creds-psk', { id: 'c0', dir: join(dir, 'psk') });
  await add(layer, 'tls-creds-psk', { id: 'c1', dir: join(dir, 'psk'), endpoint: 'client', username: 'alice' });
  await add(layer, 'tls-creds-psk', { id: 's0', dir: join(dir, 'psk'), endpoint: 'server', 'verify-peer': false, priority: 'NORMAL' });
  const client = layer.objects.get('c0')!;
  t.true(isTlsCreds(client));
  t.like(client, { id: 'c0', qomType: 'tls-creds-psk', endpoint: 'client', verifyPeer: true });
  const pskCallback = (client as TlsCreds).tlsOptions().pskCallback as (hint: string | null) => { identity: string; psk: Buffer };
  t.deepEqual(pskCallback(null), { identity: 'qemu', psk: Buffer.alloc(32, 0xaa) });
  const alice = ((layer.objects.get('c1') as TlsCreds).tlsOptions().pskCallback as typeof pskCallback)(null);
  t.deepEqual(alice, { identity: 'alice', psk: Buffer.alloc(16, 0xbb) });
  const server = layer.objects.get('s0') as TlsCreds;
  t.like(server, { endpoint: 'server', verifyPeer: false });
  const lookup = server.tlsOptions().pskCallback as (socket: unknown, identity: string) => Buffer | null;
  t.deepEqual(lookup(undefined, 'alice'), Buffer.alloc(16, 0xbb));
  t.is(lookup(undefined, 'mallory'), null);
  await pskDir(join(dir, 'psk'), { mallory: 'cc'.repeat(8) });
  t.deepEqual(lookup(undefined, 'mallory'), Buffer.alloc(8, 0xcc), 'a key added later is found without recreating the object');
});

test('tls-creds-psk refuses what QEMU 7.2 refuses, with its texts', async (t) => {
  const { layer, dir } = await setUp(t);
  const d = (name: string) => join(dir, name);
  await pskDir(d('other'), { alice: '00112233' });
  await mkdir(d('garbage'));
  await writeFile(join(d('garbage'), 'keys.psk'), 'garbage\n');
  await pskDir(d('badhex'), { qemu: 'zz11' });
  await pskDir(d('empty'), { qemu: '' });
  const refused: [Record<string, unknown>, string][] = [
    [{ id: 'p' }, "Missing 'dir' property value"],
    [{ id: 'p', dir: d('nonexistent') }, `Unable to access credentials ${d('nonexistent')}/keys.psk: No such file or directory`],
    [{ id: 'p', dir: d('nonexistent'), endpoint: 'server' }, `Unable to access credentials ${d('nonexistent')}/keys.psk: No such file or directory`],
    [{ id: 'p', dir: d('other'), endpoint: 'bogus' }, "Parameter 'endpoint' does not accept value 'bogus'"],
    [{ id: 'p', dir: d('other') }, `Username qemu not found in PSK file ${d('other')}/keys.psk`],
    [{ id: 'p', dir: d('garbage'), endpoint: 'client' }, `Username qemu not found in PSK file ${d('garbage')}/keys.psk`],
    [{ id: 'p', dir: d('badhex') }, 'Cannot set PSK client credentials: Error in parsing.'],
    [{ id: 'p', dir: d('empty') }, 'Cannot set PSK client credentials: The request is invalid.'],
    [{ id: 'p', dir: d('other'), 'sanity-check': true }, "Parameter 'sanity-check' is unexpected"],
  ];
  for (const [props, message] of refused) await t.throwsAsync(add(layer, 'tls-creds-psk', props), { message }, JSON.stringify(props));
  // The server side reads the keys only when a client connects.
  await add(layer, 'tls-creds-psk', { id: 'lazy', dir: d('garbage'), endpoint: 'server' });
  t.deepEqual(layer.objects.list().map((o) => o.id), ['lazy']);
});

test('tls-creds-x509 loads QEMU\'s files for each endpoint (client by default)', async (t) => {
  if (!requirePeer(t, 'certtool')) return;
  const { layer, dir } = await setUp(t);
  const x = await x509Dirs(dir);
  await add(layer, 'tls-creds-x509', { id: 's', dir: x.server, endpoint: 'server' });
  await add(layer, 'tls-creds-x509', { id: 'c', dir: x.client, endpoint: 'client' });
  await add(layer, 'tls-creds-x509', { id: 'd', dir: x.client });
  // A client needs only the CA; it presents no certificate without client-cert.pem.
  await add(layer, 'tls-creds-x509', { id: 'e', dir: x.server, endpoint: 'client', 'verify-peer': false });
  t.like(layer.objects.get('s'), { endpoint: 'server', verifyPeer: true });
  t.like((layer.objects.get('s') as TlsCreds).tlsOptions(), { requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' });
  t.like(layer.objects.get('d'), { endpoint: 'client', qomType: 'tls-creds-x509' });
  t.like((layer.objects.get('e') as TlsCreds).tlsOptions(), { rejectUnauthorized: false });
});

test('tls-creds-x509 refuses missing files and failed sanity checks with QEMU\'s texts', async (t) => {
  if (!requirePeer(t, 'certtool')) return;
  const { layer, dir } = await setUp(t);
  const x = await x509Dirs(dir);
  const d = (name: string) => join(dir, name);
  const build = async (name: string, files: Record<string, string>) => {
    await mkdir(d(name));
    for (const [file, from] of Object.entries(files)) await copyFile(from, join(d(name), file));
  };
  await build('nokey', { 'ca-cert.pem': join(x.server, 'ca-cert.pem'), 'server-cert.pem': join(x.server, 'server-cert.pem') });
  await build('wrongca', {
    'ca-cert.pem': join(x.otherCa, 'ca-cert.pem'),
    'server-cert.pem': join(x.server, 'server-cert.pem'),
    'server-key.pem': join(x.server, 'server-key.pem'),
  });
  await build('leafca', {
    'ca-cert.pem': join(x.server, 'server-cert.pem'),
    'server-cert.pem': join(x.server, 'server-cert.pem'),
    'server-key.pem': join(x.server, 'server-key.pem'),
  });
  await build('mismatch', {
    'ca-cert.pem': join(x.server, 'ca-cert.pem'),
    'server-cert.pem': join(x.server, 'server-cert.pem'),
    'server-key.pem': join(x.client, 'client-key.pem'),
  });
  await mkdir(d('garbage'));
  await writeFile(join(d('garbage'), 'ca-cert.pem'), 'junk\n');
  const refused: [Record<string, unknown>, string][] = [
    [{ id: 'x', endpoint: 'server' }, "Missing 'dir' property value"],
    [{ id: 'x', dir: d('none'), endpoint: 'server' }, `Unable to access credentials ${d('none')}/ca-cert.pem: No such file or directory`],
    [{ id: 'x', dir: d('none') }, `Unable to access credentials ${d('none')}/ca-cert.pem: No such file or directory`],
    [{ id: 'x', dir: d('nokey'), endpoint: 'server' }, `Unable to access credentials ${d('nokey')}/server-key.pem: No such file or directory`],
    [{ id: 'x', dir: x.client, endpoint: 'server' }, `Unable to access credentials ${x.client}/server-cert.pem: No such file or directory`],
    [{ id: 'x', dir: d('garbage') }, `Unable to import CA certificate list ${d('garbage')}/ca-cert.pem`],
    [{ id: 'x', dir: x.expired, endpoint: 'server' }, `The server certificate ${x.expired}/server-cert.pem has expired`],
    [
      { id: 'x', dir: d('wrongca'), endpoint: 'server' },
      `Our own certificate ${d('wrongca')}/server-cert.pem failed validation against ${d('wrongca')}/ca-cert.pem: The certificate hasn't got a known issuer`,
    ],
    [{ id: 'x', dir: d('leafca'), endpoint: 'server' }, `The certificate ${d('leafca')}/ca-cert.pem basic constraints do not show a CA`],
    [
      { id: 'x', dir: d('mismatch'), endpoint: 'server' },
      `Cannot load certificate '${d('mismatch')}/server-cert.pem' & key '${d('mismatch')}/server-key.pem': The certificate and the given key do not match.`,
    ],
    [{ id: 'x', dir: x.server, endpoint: 'server', username: 'qemu' }, "Parameter 'username' is unexpected"],
  ];
  for (const [props, message] of refused) await t.throwsAsync(add(layer, 'tls-creds-x509', props), { message }, JSON.stringify(props));
  // sanity-check=off loads what QEMU then loads too: an expired certificate, an unreadable CA list.
  await add(layer, 'tls-creds-x509', { id: 'old', dir: x.expired, endpoint: 'server', 'sanity-check': false });
  await add(layer, 'tls-creds-x509', { id: 'junk', dir: d('garbage'), 'sanity-check': false });
  t.deepEqual(layer.objects.list().map((o) => o.id), ['old', 'junk']);
});
