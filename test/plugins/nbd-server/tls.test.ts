/**
 * nbd-server-start with tls-creds: QEMU's errors for a missing or
 * client-side credentials object; with a PSK, clients must STARTTLS
 * (everything else is refused with ERR_TLS_REQD, EXPORT_NAME disconnects),
 * and qemu-img, qemu-io and nbdinfo then work over TLS; a wrong key fails
 * only that client.
 */
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import {
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_LIST,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_TLS_REQD,
} from '../../../core/protocols/nbd/constants.js';
import { encodeInfoRequest, encodeOption } from '../../../core/protocols/nbd/handshake.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';
import { pskDir } from '../../helpers/tls-files.js';
import { MiB, run } from './fixture.js';
import { RawNbdClient } from './raw-client.js';

async function tlsServer(t: ExecutionContext) {
  const dir = await tempDir(t, 'blocklayer-nbd-tls-');
  const keys = join(dir, 'keys');
  await pskDir(keys, { qemu: Buffer.alloc(32, 0x42) });
  const layer = await createTestLayer({ plugins: ['nbd-server', 'tls-creds', 'qmp-block-commands'] });
  t.teardown(() => layer.close());
  await layer.objects.add('tls-creds-psk', { id: 'tls0', endpoint: 'server', dir: keys });
  await layer.objects.add('tls-creds-psk', { id: 'tlsc', endpoint: 'client', dir: keys });
  const socket = join(dir, 'nbd.sock');
  await layer.execute('blockdev-add', { driver: 'memory', 'node-name': 'm', size: 4 * MiB });
  return { dir, keys, layer, socket, start: (creds: string) => layer.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } }, 'tls-creds': creds }) };
}

test('tls-creds must name server credentials (QEMU’s errors)', async (t) => {
  const { start } = await tlsServer(t);
  await t.throwsAsync(start('nope'), { message: "No TLS credentials with id 'nope'" });
  await t.throwsAsync(start('tlsc'), { message: 'Expected TLS credentials for a server endpoint' });
  await start('tls0');
  t.pass();
});

test('with TLS configured, options before STARTTLS are refused (EXPORT_NAME disconnects)', async (t) => {
  const { layer, socket, start } = await tlsServer(t);
  await start('tls0');
  await layer.execute('block-export-add', { type: 'nbd', id: 'm', 'node-name': 'm' });
  const c = await RawNbdClient.connect(socket);
  await c.greet();
  for (const [option, data] of [[NBD_OPT_STRUCTURED_REPLY], [NBD_OPT_LIST], [NBD_OPT_GO, encodeInfoRequest('m', [NBD_INFO_BLOCK_SIZE])], [99]] as const) {
    const [reply] = await c.option(option, data);
    t.is(reply!.type, NBD_REP_ERR_TLS_REQD);
    t.is(reply!.payload.toString(), `Option 0x${option.toString(16)} not permitted before TLS`);
  }
  t.is((await c.option(NBD_OPT_ABORT))[0]!.type, NBD_REP_ACK, 'ABORT is allowed');
  const d = await RawNbdClient.connect(socket);
  await d.greet();
  d.send(encodeOption(NBD_OPT_EXPORT_NAME, Buffer.from('m')));
  await d.closed;
  c.destroy();
});

test('qemu-img, qemu-io and nbdinfo work over TLS with the PSK; a wrong key fails that client only', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io') || !requirePeer(t, 'nbdinfo')) return;
  const { dir, keys, layer, socket, start } = await tlsServer(t);
  await start('tls0');
  await layer.execute('block-export-add', { type: 'nbd', id: 'm', 'node-name': 'm', writable: true });
  const object = `tls-creds-psk,id=tls0,endpoint=client,dir=${keys}`;
  const opts = `driver=nbd,server.type=unix,server.path=${socket},export=m,tls-creds=tls0`;
  const info = await run('qemu-img', ['info', '--object', object, '--image-opts', opts]);
  t.is(info.code, 0, info.stderr);
  t.regex(info.stdout, /virtual size: 4 MiB \(4194304 bytes\)/);
  const io = await run('qemu-io', ['--object', object, '--image-opts', opts, '-c', 'write -P 0x5c 1M 64k', '-c', 'read -P 0x5c 1M 64k']);
  t.is(io.code, 0, io.stderr);
  t.notRegex(io.stdout, /Pattern verification failed/);
  const nbdinfo = await run('nbdinfo', ['--json', `nbds+unix://qemu@/m?socket=${socket}&tls-psk-file=${join(keys, 'keys.psk')}`]);
  t.is(nbdinfo.code, 0, nbdinfo.stderr);
  t.like(JSON.parse(nbdinfo.stdout), { TLS: true, structured: true });
  const plain = await run('qemu-img', ['info', '--image-opts', opts.replace(',tls-creds=tls0', '')]);
  t.regex(plain.stderr, /server reported: Option 0x7 not permitted before TLS/);
  const wrong = join(dir, 'wrong');
  await pskDir(wrong, { qemu: Buffer.alloc(32, 0x13) });
  const refused = await run('qemu-img', ['info', '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${wrong}`, '--image-opts', opts]);
  t.not(refused.code, 0);
  const again = await run('qemu-io', ['-r', '--object', object, '--image-opts', opts, '-c', 'read -P 0x5c 1M 64k']);
  t.notRegex(again.stdout, /Pattern verification failed/, 'the server still serves TLS clients');
  t.is(again.code, 0, again.stderr);
});
