/**
 * The nbd driver over TLS: tls-creds names a tls-creds-psk or
 * tls-creds-x509 object, the client sends NBD_OPT_STARTTLS and negotiates
 * over TLS. Against nbdkit (--tls=require, PSK and X.509), qemu-nbd (PSK,
 * also across a reconnect) and the fake server (refusals). Error texts are
 * QEMU 7.2's, recorded from qemu-storage-daemon's blockdev-add against the
 * same servers.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import test, { type ExecutionContext } from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { BlockNode } from '../../../core/block/block-node.js';
import { NBD_OPT_ABORT, NBD_OPT_STARTTLS } from '../../../core/protocols/nbd/constants.js';
import { createTestLayer } from '../../../core/testing/index.js';
import type { NbdState } from '../../../drivers/nbd/driver.js';
import { requirePeer } from '../../helpers/peers.js';
import { pskDir, x509Dirs } from '../../helpers/tls-files.js';
import { FakeNbdServer } from './fake-server.js';
import { filled, kill, KiB, MiB, nbdFixture, type NbdFixture, readNode, run, sameBytes } from './fixture.js';

interface TlsKit {
  f: NbdFixture;
  layer: BlockLayer;
  /** object-add of TLS credentials. */
  creds(qomType: 'tls-creds-psk' | 'tls-creds-x509', props: Record<string, unknown>): Promise<unknown>;
  /** blockdev-add of nbd node `name` (default 'n'). */
  add(server: unknown, extra?: Record<string, unknown>, name?: string): Promise<BlockNode>;
}

/** The nbd fixture's daemons and temporary directory, with a layer that has object-add and the nbd driver. */
async function tlsKit(t: ExecutionContext): Promise<TlsKit> {
  const f = await nbdFixture(t);
  const layer = await createTestLayer({ plugins: ['nbd', 'tls-creds', 'qmp-block-commands'] });
  t.teardown(() => layer.close());
  return {
    f,
    layer,
    creds: (qomType, props) => layer.execute('object-add', { 'qom-type': qomType, ...props }),
    add: async (server, extra = {}, name = 'n') => {
      await layer.execute('blockdev-add', { driver: 'nbd', 'node-name': name, server, ...extra });
      return layer.graph.node(name)!;
    },
  };
}

/** Writes and reads back through `node`: the export really carries data over TLS. */
async function readsAndWrites(t: ExecutionContext, node: BlockNode): Promise<void> {
  const data = randomBytes(64 * KiB);
  await node.write(MiB, data, {});
  sameBytes(t, await readNode(node, MiB, 64 * KiB), data);
  await node.writeZeroes(MiB, 4 * KiB, {});
  sameBytes(t, await readNode(node, MiB, 4 * KiB), filled(4 * KiB, 0));
  await node.flush();
}

test('PSK: our client reads and writes an export of nbdkit --tls=require --tls-psk', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const k = await tlsKit(t);
  await pskDir(k.f.path('psk'));
  const server = await k.f.nbdkit(['--tls=require', `--tls-psk=${k.f.path('psk')}/keys.psk`, 'memory', '64M']);
  await k.creds('tls-creds-psk', { id: 'tls0', dir: k.f.path('psk'), endpoint: 'client' });
  const node = await k.add(server.server, { 'tls-creds': 'tls0' });
  t.is(node.length, 64 * MiB);
  t.like((node.driverState as NbdState).client.info, { structured: true, style: 'fixed-newstyle' });
  await readsAndWrites(t, node);
  t.deepEqual(await node.blockStatus(32 * MiB, MiB), [{ offset: 32 * MiB, length: MiB, data: false, zero: true, allocated: true, hostOffset: 32 * MiB }]);
  // Written data is where the server keeps it: a second connection (a second node) sees it.
  const again = await k.add(server.server, { 'tls-creds': 'tls0', 'read-only': true }, 'n2');
  sameBytes(t, await readNode(again, MiB + 4 * KiB, 4 * KiB), (await readNode(node, MiB + 4 * KiB, 4 * KiB)));
  await k.layer.execute('blockdev-del', { 'node-name': 'n2' });
  await k.layer.execute('blockdev-del', { 'node-name': 'n' });
});

test('PSK: a wrong key or an unknown username is refused cleanly; the layer goes on', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const k = await tlsKit(t);
  await pskDir(k.f.path('psk'));
  await pskDir(k.f.path('wrong'), { qemu: randomBytes(32), alice: randomBytes(32) });
  const server = await k.f.nbdkit(['--tls=require', `--tls-psk=${k.f.path('psk')}/keys.psk`, 'memory', '1M']);
  await k.creds('tls-creds-psk', { id: 'wrong', dir: k.f.path('wrong'), endpoint: 'client' });
  await k.creds('tls-creds-psk', { id: 'alice', dir: k.f.path('wrong'), endpoint: 'client', username: 'alice' });
  for (const id of ['wrong', 'alice']) {
    const started = Date.now();
    await t.throwsAsync(k.add(server.server, { 'tls-creds': id }), { message: /^TLS handshake failed: / }, id);
    t.true(Date.now() - started < 5000, 'no hang');
  }
  t.is(k.layer.graph.node('n'), undefined);
  await k.creds('tls-creds-psk', { id: 'good', dir: k.f.path('psk'), endpoint: 'client' });
  sameBytes(t, await readNode(await k.add(server.server, { 'tls-creds': 'good' }), 0, 512), filled(512, 0));
});

test('TLS required or refused by the server, missing or server-side credentials: QEMU\'s errors', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const k = await tlsKit(t);
  await pskDir(k.f.path('psk'));
  const tlsOnly = await k.f.nbdkit(['--tls=require', `--tls-psk=${k.f.path('psk')}/keys.psk`, 'memory', '1M'], 'tls');
  const plain = await k.f.nbdkit(['memory', '1M'], 'plain');
  await k.creds('tls-creds-psk', { id: 'tls0', dir: k.f.path('psk'), endpoint: 'client' });
  await k.creds('tls-creds-psk', { id: 'srv', dir: k.f.path('psk'), endpoint: 'server' });
  // QEMU asks STRUCTURED_REPLY without insisting: the error is the GO's.
  await t.throwsAsync(k.add(tlsOnly.server), { message: 'TLS negotiation required before option 7 (go)' });
  await t.throwsAsync(k.add(plain.server, { 'tls-creds': 'tls0' }), { message: 'Denied by server for option 5 (starttls)' });
  await t.throwsAsync(k.add(plain.server, { 'tls-creds': 'nope' }), { message: "No TLS credentials with id 'nope'" });
  await t.throwsAsync(k.add(plain.server, { 'tls-creds': 'srv' }), { message: 'Expected TLS credentials for a client endpoint' });
  // tls-hostname without tls-creds changes nothing (QEMU ignores it too).
  sameBytes(t, await readNode(await k.add(plain.server, { 'tls-hostname': 'x' }), 0, 512), filled(512, 0));
});

test('servers that cannot do STARTTLS: ERR_UNSUP, plain newstyle', async (t) => {
  const k = await tlsKit(t);
  await pskDir(k.f.path('psk'));
  await k.creds('tls-creds-psk', { id: 'tls0', dir: k.f.path('psk'), endpoint: 'client' });
  const unsup = await FakeNbdServer.start(k.f.dir, { size: 4096 });
  t.teardown(() => unsup.close());
  await t.throwsAsync(k.add(unsup.address, { 'tls-creds': 'tls0' }), { message: 'Unsupported option 5 (starttls)' });
  await unsup.settled();
  t.deepEqual(unsup.options, [NBD_OPT_STARTTLS, NBD_OPT_ABORT], 'STARTTLS first; then the client gives up politely');
  await unsup.close();
  const old = await FakeNbdServer.start(k.f.dir, { size: 4096, handshakeFlags: 0 });
  t.teardown(() => old.close());
  await t.throwsAsync(k.add(old.address, { 'tls-creds': 'tls0' }), { message: 'Server does not support STARTTLS' });
  t.deepEqual(old.options, []);
});

test('X.509: nbdkit --tls-certificates; the certificate must name tls-hostname (or the inet host)', async (t) => {
  if (!requirePeer(t, 'nbdkit') || !requirePeer(t, 'certtool')) return;
  const k = await tlsKit(t);
  const x = await x509Dirs(k.f.path('pki'));
  const server = await k.f.nbdkit(['--tls=require', `--tls-certificates=${x.server}`, '--tls-verify-peer', 'memory', '16M']);
  await k.creds('tls-creds-x509', { id: 'tls0', dir: x.client, endpoint: 'client' });
  await k.creds('tls-creds-x509', { id: 'other', dir: x.otherCa, endpoint: 'client' });
  await readsAndWrites(t, await k.add(server.server, { 'tls-creds': 'tls0', 'tls-hostname': 'localhost' }));
  await t.throwsAsync(k.add(server.server, { 'tls-creds': 'tls0', 'tls-hostname': 'nbd.example' }, 'm'), {
    message: 'Certificate does not match the hostname nbd.example',
  });
  // A Unix socket has no host name to check (QEMU 7.2: the same text).
  await t.throwsAsync(k.add(server.server, { 'tls-creds': 'tls0' }, 'm'), { message: 'No hostname for certificate validation' });
  await t.throwsAsync(k.add(server.server, { 'tls-creds': 'other', 'tls-hostname': 'localhost' }, 'm'), {
    message: "The certificate hasn't got a known issuer",
  });

  // Over TCP the host is the name to check: 127.0.0.1 is in the certificate.
  const probe = createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = String((probe.address() as { port: number }).port);
  await new Promise((resolve) => probe.close(resolve));
  const pidFile = k.f.path('tcp.pid');
  await run('nbdkit', ['-i', '127.0.0.1', '-p', port, '-P', pidFile, '--tls=require', `--tls-certificates=${x.server}`, 'memory', '16M']);
  const pid = Number((await readPidFile(pidFile)).trim());
  t.teardown(async () => {
    // nbdkit waits for its clients before exiting.
    await k.layer.close();
    await kill(pid);
  });
  const tcp = await k.add({ type: 'inet', host: '127.0.0.1', port }, { 'tls-creds': 'tls0' }, 'tcp');
  await readsAndWrites(t, tcp);
});

async function readPidFile(path: string): Promise<string> {
  for (let i = 0; i < 500; i++) {
    const text = await readFile(path, 'utf8').catch(() => '');
    if (text.endsWith('\n')) return text;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no PID in ${path}`);
}

test('PSK with qemu-nbd --object tls-creds-psk,endpoint=server --tls-creds; a reconnect does TLS again', async (t) => {
  if (!requirePeer(t, 'qemu-nbd')) return;
  const k = await tlsKit(t);
  await pskDir(k.f.path('psk'));
  await pskDir(k.f.path('wrong'));
  await writeFile(k.f.path('d.raw'), filled(4 * MiB, 0x5a));
  const tlsArgs = ['--object', `tls-creds-psk,id=tls0,dir=${k.f.path('psk')},endpoint=server`, '--tls-creds=tls0'];
  const first = await k.f.qemuNbd(k.f.path('d.raw'), tlsArgs);
  await k.creds('tls-creds-psk', { id: 'tls0', dir: k.f.path('psk'), endpoint: 'client' });
  await k.creds('tls-creds-psk', { id: 'wrong', dir: k.f.path('wrong'), endpoint: 'client' });
  await t.throwsAsync(k.add(first.server, { export: 'exp', 'tls-creds': 'wrong' }), { message: /^TLS handshake failed: / });
  await t.throwsAsync(k.add(first.server, { export: 'exp' }), {
    message: 'TLS negotiation required before option 7 (go); server reported: Option 0x7 not permitted before TLS',
  });
  const node = await k.add(first.server, { export: 'exp', 'tls-creds': 'tls0', 'reconnect-delay': 10 });
  await node.write(0, filled(4 * KiB, 0x11), {});
  await first.stop();
  // The object may even go away meanwhile: the node holds its credentials, as QEMU holds a reference.
  await k.layer.execute('object-del', { id: 'tls0' });
  const read = readNode(node, 0, 8 * KiB);
  await k.f.qemuNbd(k.f.path('d.raw'), tlsArgs);
  sameBytes(t, await read, Buffer.concat([filled(4 * KiB, 0x11), filled(4 * KiB, 0x5a)]));
});
