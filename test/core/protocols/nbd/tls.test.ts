/**
 * serverTlsSocket and clientTlsSocket: paired with each other over
 * loopback TCP (PSK in TLS 1.3 and 1.2, X.509 with and without client
 * certificates and host names), failing cleanly on both sides (wrong key,
 * wrong CA, silent peer), and serverTlsSocket against GnuTLS (qemu-img as
 * the client of a STARTTLS that a tiny server acknowledges).
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { BlockLayer } from '../../../../core/block-layer.js';
import { NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK } from '../../../../core/protocols/nbd/constants.js';
import { decodeOptionHeader, encodeGreeting, encodeOptionReply } from '../../../../core/protocols/nbd/handshake.js';
import { clientTlsSocket, describeTlsError, serverTlsSocket, TlsHandshakeError } from '../../../../core/protocols/nbd/tls.js';
import type { TlsCreds } from '../../../../core/objects/user-object.js';
import { createTestLayer } from '../../../../core/testing/index.js';
import { requirePeer } from '../../../helpers/peers.js';
import { tempDir } from '../../../helpers/temp-dir.js';
import { pskDir, x509Dirs } from '../../../helpers/tls-files.js';

interface Kit {
  layer: BlockLayer;
  dir: string;
  /** Creates credentials with object-add and returns them. */
  creds(qomType: string, props: Record<string, unknown>): Promise<TlsCreds>;
}

async function kit(t: ExecutionContext): Promise<Kit> {
  const dir = await tempDir(t, 'blocklayer-tls-');
  const layer = await createTestLayer({ plugins: ['tls-creds'] });
  t.teardown(() => layer.close());
  return {
    layer,
    dir,
    creds: async (qomType, props) => {
      await layer.execute('object-add', { 'qom-type': qomType, ...props });
      return layer.objects.get(props.id as string) as TlsCreds;
    },
  };
}

/** A connected pair of plain sockets over loopback TCP: [accepted, connecting]. */
async function socketPair(t: ExecutionContext): Promise<[Socket, Socket]> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect(port, '127.0.0.1');
  const [[serverSide]] = await Promise.all([accepted, once(client, 'connect')]);
  server.close();
  t.teardown(() => {
    serverSide.destroy();
    client.destroy();
  });
  return [serverSide, client];
}

/** Both handshakes, settled (a failing side must not leave the other hanging). */
async function handshakes(server: Promise<Socket>, client: Promise<Socket>) {
  const [s, c] = await Promise.allSettled([server, client]);
  return { server: s, client: c };
}

/** Bytes each way over the two TLS sockets. */
async function exchange(t: ExecutionContext, a: Socket, b: Socket): Promise<void> {
  const gotB = once(b, 'data');
  a.write('ping');
  t.is(String((await gotB)[0]), 'ping');
  const gotA = once(a, 'data');
  b.write('pong');
  t.is(String((await gotA)[0]), 'pong');
}

function rejectedWith(t: ExecutionContext, result: PromiseSettledResult<unknown>, message: RegExp): void {
  if (result.status !== 'rejected') {
    t.fail('the handshake succeeded');
    return;
  }
  t.true(result.reason instanceof TlsHandshakeError, String(result.reason));
  t.true((result.reason as Error).message.length < 200, 'one readable line');
  t.regex((result.reason as Error).message, message);
}

test('PSK: server and client agree on TLS 1.3 with the shared key, and data flows', async (t) => {
  const k = await kit(t);
  await pskDir(join(k.dir, 'psk'), { qemu: 'ab'.repeat(32) });
  const server = await k.creds('tls-creds-psk', { id: 's', dir: join(k.dir, 'psk'), endpoint: 'server' });
  const client = await k.creds('tls-creds-psk', { id: 'c', dir: join(k.dir, 'psk'), endpoint: 'client' });
  const [a, b] = await socketPair(t);
  const [tlsA, tlsB] = await Promise.all([serverTlsSocket(a, server), clientTlsSocket(b, client)]);
  t.is(tlsA.getProtocol(), 'TLSv1.3');
  t.regex(tlsB.getCipher().name, /^TLS_(AES_128_GCM|CHACHA20_POLY1305)_SHA256$/);
  await exchange(t, tlsA, tlsB);
});

test('PSK: a peer limited to TLS 1.2 still gets a PSK cipher suite', async (t) => {
  const k = await kit(t);
  await pskDir(join(k.dir, 'psk'), { qemu: 'cd'.repeat(32) });
  const server = await k.creds('tls-creds-psk', { id: 's', dir: join(k.dir, 'psk'), endpoint: 'server' });
  const client = await k.creds('tls-creds-psk', { id: 'c', dir: join(k.dir, 'psk'), endpoint: 'client' });
  const tls12: TlsCreds = { ...client, endpoint: 'client', tlsOptions: () => ({ ...client.tlsOptions(), maxVersion: 'TLSv1.2' }) };
  const [a, b] = await socketPair(t);
  const [tlsA, tlsB] = await Promise.all([serverTlsSocket(a, server), clientTlsSocket(b, tls12)]);
  t.is(tlsA.getProtocol(), 'TLSv1.2');
  t.regex(tlsB.getCipher().name, /PSK/);
  await exchange(t, tlsA, tlsB);
});

test('PSK: a wrong key or an unknown username fails both sides cleanly, without a hang', async (t) => {
  const k = await kit(t);
  await pskDir(join(k.dir, 'server'), { qemu: '11'.repeat(32) });
  await pskDir(join(k.dir, 'wrong'), { qemu: '22'.repeat(32), bob: '11'.repeat(32) });
  const server = await k.creds('tls-creds-psk', { id: 's', dir: join(k.dir, 'server'), endpoint: 'server' });
  const wrongKey = await k.creds('tls-creds-psk', { id: 'w', dir: join(k.dir, 'wrong'), endpoint: 'client' });
  const unknownUser = await k.creds('tls-creds-psk', { id: 'u', dir: join(k.dir, 'wrong'), endpoint: 'client', username: 'bob' });
  for (const client of [wrongKey, unknownUser]) {
    const [a, b] = await socketPair(t);
    const started = Date.now();
    const result = await handshakes(serverTlsSocket(a, server), clientTlsSocket(b, client));
    t.true(Date.now() - started < 5000);
    rejectedWith(t, result.server, /^TLS handshake failed: /);
    rejectedWith(t, result.client, /^TLS handshake failed: /);
    t.true(a.destroyed && b.destroyed, 'both plain sockets are destroyed');
  }
});

test('credentials for the wrong side are refused before any byte is sent', async (t) => {
  const k = await kit(t);
  await pskDir(join(k.dir, 'psk'));
  const client = await k.creds('tls-creds-psk', { id: 'c', dir: join(k.dir, 'psk'), endpoint: 'client' });
  const server = await k.creds('tls-creds-psk', { id: 's', dir: join(k.dir, 'psk'), endpoint: 'server' });
  const [a, b] = await socketPair(t);
  await t.throwsAsync(serverTlsSocket(a, client), { message: 'Expected TLS credentials for a server endpoint' });
  await t.throwsAsync(clientTlsSocket(b, server), { message: 'Expected TLS credentials for a client endpoint' });
});

test('a peer that never answers the handshake times out', async (t) => {
  const k = await kit(t);
  await pskDir(join(k.dir, 'psk'));
  const server = await k.creds('tls-creds-psk', { id: 's', dir: join(k.dir, 'psk'), endpoint: 'server' });
  const client = await k.creds('tls-creds-psk', { id: 'c', dir: join(k.dir, 'psk'), endpoint: 'client' });
  const [a, b] = await socketPair(t);
  await t.throwsAsync(serverTlsSocket(a, server, { timeoutMs: 200 }), {
    instanceOf: TlsHandshakeError,
    message: 'TLS handshake failed: no handshake within 200 ms',
  });
  const [c, d] = await socketPair(t);
  d.on('data', () => undefined);
  await t.throwsAsync(clientTlsSocket(c, client, undefined, { timeoutMs: 200 }), { message: 'TLS handshake failed: no handshake within 200 ms' });
  t.true(a.destroyed && c.destroyed);
  void b;
});

test('X.509: client certificates, host names and CAs are checked as the credentials say', async (t) => {
  if (!requirePeer(t, 'certtool')) return;
  const k = await kit(t);
  const x = await x509Dirs(k.dir);
  const server = await k.creds('tls-creds-x509', { id: 's', dir: x.server, endpoint: 'server' });
  const lenientServer = await k.creds('tls-creds-x509', { id: 's2', dir: x.server, endpoint: 'server', 'verify-peer': false });
  const client = await k.creds('tls-creds-x509', { id: 'c', dir: x.client, endpoint: 'client' });
  const anonymous = await k.creds('tls-creds-x509', { id: 'a', dir: x.server, endpoint: 'client' });
  const wrongCa = await k.creds('tls-creds-x509', { id: 'w', dir: x.otherCa, endpoint: 'client' });
  const trustAll = await k.creds('tls-creds-x509', { id: 'n', dir: x.otherCa, endpoint: 'client', 'verify-peer': false });

  for (const hostname of ['localhost', '127.0.0.1']) {
    const [a, b] = await socketPair(t);
    const [tlsA, tlsB] = await Promise.all([serverTlsSocket(a, server), clientTlsSocket(b, client, hostname)]);
    t.is(tlsA.getPeerCertificate().subject?.CN, 'client', 'the server has the client certificate');
    t.true(tlsB.authorized);
    await exchange(t, tlsA, tlsB);
  }
  // The client's verdicts are QEMU's texts (crypto/tlssession.c), without a prefix.
  const failures: [TlsCreds, string | undefined, RegExp][] = [
    [client, 'wrong.example', /^Certificate does not match the hostname wrong\.example$/],
    [client, undefined, /^No hostname for certificate validation$/],
    [wrongCa, 'localhost', /^The certificate hasn't got a known issuer$/],
  ];
  for (const [clientCreds, hostname, clientMessage] of failures) {
    const [a, b] = await socketPair(t);
    const result = await handshakes(serverTlsSocket(a, server), clientTlsSocket(b, clientCreds, hostname));
    rejectedWith(t, result.client, clientMessage);
    rejectedWith(t, result.server, /^TLS handshake failed: /);
  }
  // Without a client certificate the server refuses; in TLS 1.3 the client learns it only from the alert that follows.
  const [a, b] = await socketPair(t);
  const result = await handshakes(serverTlsSocket(a, server), clientTlsSocket(b, anonymous, 'localhost'));
  rejectedWith(t, result.server, /^TLS handshake failed: .*certificate/);
  if (result.client.status === 'fulfilled') {
    const [error] = (await once(result.client.value, 'error')) as [Error & { code?: string }];
    t.is(error.code, 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
    t.is(describeTlsError(error), 'TLS handshake failed: the server requires a client certificate (client-cert.pem)');
  } else {
    rejectedWith(t, result.client, /^TLS handshake failed: /);
  }
  // verify-peer=off: a server that takes clients without certificates; a client that trusts any server, under any name.
  for (const [serverCreds, clientCreds, hostname] of [
    [lenientServer, anonymous, 'localhost'],
    [lenientServer, trustAll, undefined],
    [lenientServer, trustAll, 'wrong.example'],
  ] as const) {
    const [c, d] = await socketPair(t);
    const [tlsC, tlsD] = await Promise.all([serverTlsSocket(c, serverCreds), clientTlsSocket(d, clientCreds, hostname)]);
    await exchange(t, tlsC, tlsD);
  }
});

/**
 * A server that acknowledges STARTTLS, runs serverTlsSocket, then reads the
 * client's next option over TLS: what GnuTLS (qemu-img) made of it.
 */
async function starttlsServer(t: ExecutionContext, path: string, creds: TlsCreds): Promise<{ server: Server; outcome: Promise<string> }> {
  const server = createServer();
  server.listen(path);
  await once(server, 'listening');
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const outcome = new Promise<string>((resolve) => {
    server.once('connection', (socket: Socket) => {
      let buffered = Buffer.alloc(0);
      const onData = async (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (buffered.length < 4 + 16) return;
        socket.off('data', onData);
        const option = decodeOptionHeader(buffered.subarray(4, 20));
        if (option.option !== NBD_OPT_STARTTLS) return resolve(`option ${option.option} before STARTTLS`);
        socket.write(encodeOptionReply(NBD_OPT_STARTTLS, NBD_REP_ACK));
        try {
          const tls = await serverTlsSocket(socket, creds);
          const [next] = (await once(tls, 'data')) as [Buffer];
          resolve(`TLS ${tls.getProtocol()}, then option ${decodeOptionHeader(next.subarray(0, 16)).option}`);
          tls.destroy();
        } catch (error) {
          resolve((error as Error).message);
        }
      };
      socket.on('data', (chunk: Buffer) => void onData(chunk));
      socket.on('error', () => undefined);
      socket.write(encodeGreeting(3));
    });
  });
  return { server, outcome };
}

/** qemu-img info over NBD with `object` as its TLS credentials (it fails after our side is done; only our side counts). */
function qemuImg(path: string, object: string): Promise<string> {
  const image = `driver=nbd,server.type=unix,server.path=${path},tls-creds=tls0,tls-hostname=localhost`;
  return new Promise((resolve) => {
    execFile('qemu-img', ['info', '--object', object, '--image-opts', image], { timeout: 10_000 }, (_e, out, err) => resolve(`${out}${err}`));
  });
}

test('serverTlsSocket against GnuTLS: qemu-img with PSK and X.509 credentials; a wrong key is refused', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'certtool')) return;
  const k = await kit(t);
  await pskDir(join(k.dir, 'psk'), { qemu: '5a'.repeat(32) });
  await pskDir(join(k.dir, 'wrong'), { qemu: 'a5'.repeat(32) });
  const x = await x509Dirs(k.dir);
  const psk = await k.creds('tls-creds-psk', { id: 'psk', dir: join(k.dir, 'psk'), endpoint: 'server' });
  const x509 = await k.creds('tls-creds-x509', { id: 'x509', dir: x.server, endpoint: 'server' });
  const cases: [TlsCreds, string, RegExp][] = [
    [psk, `tls-creds-psk,id=tls0,dir=${k.dir}/psk,endpoint=client`, new RegExp(`^TLS TLSv1\\.3, then option ${NBD_OPT_STRUCTURED_REPLY}$`)],
    [x509, `tls-creds-x509,id=tls0,dir=${x.client},endpoint=client`, new RegExp(`^TLS TLSv1\\.3, then option ${NBD_OPT_STRUCTURED_REPLY}$`)],
    [psk, `tls-creds-psk,id=tls0,dir=${k.dir}/wrong,endpoint=client`, /^TLS handshake failed: /],
    [x509, `tls-creds-x509,id=tls0,dir=${x.otherCa},endpoint=client`, /^TLS handshake failed: /],
  ];
  for (const [i, [creds, object, expected]] of cases.entries()) {
    const path = join(k.dir, `s${i}.sock`);
    const { outcome } = await starttlsServer(t, path, creds);
    const [ours, theirs] = await Promise.all([outcome, qemuImg(path, object)]);
    t.regex(ours, expected, `${object}: qemu-img said ${theirs}`);
  }
});
