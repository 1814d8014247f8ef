/**
 * The handshake, option by option, against qemu-storage-daemon 7.2 as the
 * oracle: the same probes on one connection to each server must get the
 * same replies (types and payloads, error texts included), then the cases
 * that end a connection (a bad magic, bad client flags, EXPORT_NAME of an
 * unknown export) and the EXPORT_NAME reply's padding.
 */
import { readFile } from 'node:fs/promises';
import test from 'ava';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
} from '../../../core/protocols/nbd/constants.js';
import { encodeInfoRequest, encodeMetaContextRequest, encodeOption } from '../../../core/protocols/nbd/handshake.js';
import { requirePeer } from '../../helpers/peers.js';
import { exportImage, ok, rawImage, serverFixture } from './fixture.js';
import { RawNbdClient } from './raw-client.js';

type Probe = [option: number, data?: Buffer];

const info = (name: string, infos: number[]) => encodeInfoRequest(name, infos);
const meta = (name: string, queries: string[]) => encodeMetaContextRequest(name, queries);

const PROBES: Probe[] = [
  [99, Buffer.from('abc')],
  [NBD_OPT_LIST],
  [NBD_OPT_LIST, Buffer.from([1])],
  [NBD_OPT_STARTTLS],
  [NBD_OPT_EXTENDED_HEADERS],
  [NBD_OPT_INFO, info('nope', [NBD_INFO_NAME])],
  [NBD_OPT_INFO, info('exp', [NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME, NBD_INFO_DESCRIPTION])],
  [NBD_OPT_INFO, info('exp', [])],
  [NBD_OPT_GO, info('exp', [NBD_INFO_NAME]).subarray(0, 7)],
  [NBD_OPT_SET_META_CONTEXT, meta('exp', ['base:allocation'])],
  [NBD_OPT_LIST_META_CONTEXT, meta('exp', [])],
  [NBD_OPT_LIST_META_CONTEXT, meta('exp', ['qemu:', 'nope:x'])],
  [NBD_OPT_LIST_META_CONTEXT, meta('exp', ['base:'])],
  [NBD_OPT_LIST_META_CONTEXT, meta('nope', [])],
  [NBD_OPT_STRUCTURED_REPLY, Buffer.from([0])],
  [NBD_OPT_STRUCTURED_REPLY],
  [NBD_OPT_STRUCTURED_REPLY],
  [NBD_OPT_SET_META_CONTEXT, meta('exp', ['base:allocation', 'qemu:allocation-depth', 'x:y', 'base:'])],
  [NBD_OPT_SET_META_CONTEXT, meta('exp', ['qemu:allocation-depth'])],
  [NBD_OPT_SET_META_CONTEXT, meta('exp', []).subarray(0, 5)],
  [NBD_OPT_GO, info('exp', [NBD_INFO_BLOCK_SIZE])],
];

/** Every reply to every probe, in order, on one connection. */
async function converse(socket: string): Promise<unknown[]> {
  const client = await RawNbdClient.connect(socket);
  const transcript: unknown[] = [(await client.greet()).toString('hex')];
  for (const [option, data] of PROBES) {
    const replies = await client.option(option, data);
    transcript.push({ option, replies: replies.map((r) => ({ type: r.type.toString(16), payload: printable(r.payload) })) });
  }
  client.destroy();
  return transcript;
}

function printable(payload: Buffer): string {
  return /^[\x20-\x7e]*$/.test(payload.toString('latin1')) ? payload.toString('latin1') : payload.toString('hex');
}

test('option replies are qemu-storage-daemon’s, byte for byte', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon') || !requirePeer(t, 'qemu-img')) return;
  const f = await serverFixture(t);
  await rawImage(f.path('a.raw'), '4M');
  await rawImage(f.path('b.raw'), '4M');
  await exportImage(f, f.path('a.raw'), 'exp', { writable: true, description: 'the disk', 'allocation-depth': true });
  const qsd = f.path('qsd.sock');
  const pidfile = f.path('qsd.pid');
  await ok('qemu-storage-daemon', [
    '--blockdev', `driver=file,node-name=f0,filename=${f.path('b.raw')}`,
    '--blockdev', 'driver=raw,node-name=exp,file=f0',
    '--nbd-server', `addr.type=unix,addr.path=${qsd}`,
    '--export', 'type=nbd,id=exp,node-name=exp,writable=on,description=the disk,allocation-depth=on',
    '--pidfile', pidfile, '--daemonize',
  ]);
  t.teardown(async () => process.kill(Number(await readFile(pidfile, 'utf8')), 'SIGTERM'));
  const [ours, qemu] = await Promise.all([converse(f.socket), converse(qsd)]);
  t.is(ours.length, qemu.length);
  for (const [i, expected] of qemu.entries()) t.deepEqual(ours[i], expected, `probe ${i}`);
});

test('framing violations end the connection; other clients carry on', async (t) => {
  const f = await serverFixture(t, ['memory']);
  await f.execute('blockdev-add', { driver: 'memory', 'node-name': 'm', size: 1 << 20 });
  await f.execute('block-export-add', { type: 'nbd', id: 'm', 'node-name': 'm' });
  const bystander = await RawNbdClient.connect(f.socket);
  await bystander.handshake('m');
  const cases: [string, (c: RawNbdClient) => Promise<void>][] = [
    ['unknown client flags', async (c) => void (await c.greet(0x80))],
    ['bad option magic', async (c) => {
      await c.greet();
      c.send(Buffer.alloc(16, 0xee));
    }],
    ['option data over 32 MiB', async (c) => {
      await c.greet();
      const header = encodeOption(NBD_OPT_LIST);
      header.writeUInt32BE(64 * 1024 * 1024, 12);
      c.send(header);
    }],
    ['EXPORT_NAME of an unknown export', async (c) => {
      await c.greet();
      c.send(encodeOption(NBD_OPT_EXPORT_NAME, Buffer.from('nope')));
    }],
    ['an option other than EXPORT_NAME without fixed newstyle', async (c) => {
      await c.greet(0);
      c.send(encodeOption(NBD_OPT_LIST));
    }],
  ];
  for (const [what, misbehave] of cases) {
    const c = await RawNbdClient.connect(f.socket);
    await misbehave(c);
    await c.closed;
    t.pass(what);
  }
  bystander.request({ type: 0, offset: 0, length: 512 });
  t.is(RawNbdClient.errorOf(await bystander.reply()), 0, 'the bystander is served');
});

test('EXPORT_NAME: 124 zero bytes of padding unless the client asked for none; transmission follows', async (t) => {
  const f = await serverFixture(t, ['memory']);
  await f.execute('blockdev-add', { driver: 'memory', 'node-name': 'm', size: 1 << 20 });
  await f.execute('block-export-add', { type: 'nbd', id: 'm', 'node-name': 'm', writable: true });
  for (const [clientFlags, size] of [[NBD_FLAG_C_FIXED_NEWSTYLE, 134], [NBD_FLAG_C_FIXED_NEWSTYLE | 2, 10], [0, 134]] as const) {
    const c = await RawNbdClient.connect(f.socket);
    await c.greet(clientFlags);
    c.send(encodeOption(NBD_OPT_EXPORT_NAME, Buffer.from('m')));
    const reply = await c.reader.read(size);
    t.is(reply.readBigUInt64BE(0), 1n << 20n);
    t.is(reply.readUInt16BE(8), 0x0d6d, 'no structured replies: no DF (qemu-storage-daemon sends the same)');
    t.true(reply.subarray(10).every((b) => b === 0));
    c.request({ type: 1, offset: 4096 }, Buffer.alloc(512, 7));
    t.deepEqual(await c.reply(), { kind: 'simple', cookie: 1n, error: 0 });
    c.request({ type: 0, offset: 4096, length: 512 });
    const read = await c.reply(512);
    t.true(read.kind === 'simple' && read.data!.equals(Buffer.alloc(512, 7)));
    c.destroy();
  }
});
