/**
 * The transmission phase, byte by byte with a raw client: sparse reads as
 * qemu sends them, block status per context with and without REQ_ONE, and
 * every bad request answered as the NBD reference says — with an error,
 * the connection going on — except the framing violations that end it.
 */
import test from 'ava';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
} from '../../../core/protocols/nbd/constants.js';
import { KiB, MiB, serverFixture } from './fixture.js';
import { type Chunk, RawNbdClient, type Reply } from './raw-client.js';

async function memoryExport(t: Parameters<typeof serverFixture>[0], size: number, options: Record<string, unknown> = {}) {
  const f = await serverFixture(t, ['memory']);
  await f.execute('blockdev-add', { driver: 'memory', 'node-name': 'm', size });
  await f.execute('block-export-add', { type: 'nbd', id: 'm', 'node-name': 'm', writable: true, ...options });
  const node = f.layer.graph.node('m')!;
  const connect = async (contexts: string[] = [], structured = true) => {
    const client = await RawNbdClient.connect(f.socket);
    t.teardown(() => client.destroy());
    return { client, ...(await client.handshake('m', contexts, structured)) };
  };
  return { f, node, connect };
}

/** Data chunks as [type, offset, length], holes as well; checks DONE is on the last chunk only. */
function layout(t: { true(v: boolean, m?: string): void }, reply: Reply): [number, number, number][] {
  if (reply.kind !== 'structured') throw new Error('expected a structured reply');
  reply.chunks.forEach((c, i) => t.true(((c.flags & NBD_REPLY_FLAG_DONE) !== 0) === (i === reply.chunks.length - 1), 'DONE on the last chunk'));
  return reply.chunks.map((c: Chunk) => [
    c.type,
    Number(c.payload.readBigUInt64BE(0)),
    c.type === NBD_REPLY_TYPE_OFFSET_HOLE ? c.payload.readUInt32BE(8) : c.payload.length - 8,
  ]);
}

test('reads: holes as OFFSET_HOLE and data as OFFSET_DATA; one OFFSET_DATA with DF; data after a simple reply without structured replies', async (t) => {
  const { node, connect } = await memoryExport(t, 4 * MiB);
  await node.write(MiB, Buffer.alloc(64 * KiB, 0x5a));
  const { client } = await connect();
  client.request({ type: NBD_CMD_READ, offset: 0, length: 2 * MiB });
  const sparse = await client.reply();
  t.deepEqual(layout(t, sparse), [
    [NBD_REPLY_TYPE_OFFSET_HOLE, 0, MiB],
    [NBD_REPLY_TYPE_OFFSET_DATA, MiB, 64 * KiB],
    [NBD_REPLY_TYPE_OFFSET_HOLE, MiB + 64 * KiB, MiB - 64 * KiB],
  ]);
  t.true(sparse.kind === 'structured' && sparse.chunks[1]!.payload.subarray(8).equals(Buffer.alloc(64 * KiB, 0x5a)));
  client.request({ type: NBD_CMD_READ, flags: NBD_CMD_FLAG_DF, offset: MiB - 4 * KiB, length: 72 * KiB });
  const whole = await client.reply();
  t.deepEqual(layout(t, whole), [[NBD_REPLY_TYPE_OFFSET_DATA, MiB - 4 * KiB, 72 * KiB]]);
  const data = whole.kind === 'structured' ? whole.chunks[0]!.payload.subarray(8) : Buffer.alloc(0);
  t.true(data.equals(Buffer.concat([Buffer.alloc(4 * KiB), Buffer.alloc(64 * KiB, 0x5a), Buffer.alloc(4 * KiB)])));
  client.request({ type: NBD_CMD_READ, offset: 0, length: 0 });
  const empty = await client.reply();
  t.true(empty.kind === 'structured' && empty.chunks.length === 1 && empty.chunks[0]!.type === NBD_REPLY_TYPE_NONE);

  const { client: plain, flags } = await connect([], false);
  t.is(flags & 0x80, 0, 'no SEND_DF without structured replies');
  plain.request({ type: NBD_CMD_READ, offset: MiB, length: 4 * KiB });
  t.deepEqual(await plain.reply(4 * KiB), { kind: 'simple', cookie: 1n, error: 0, data: Buffer.alloc(4 * KiB, 0x5a) });
  plain.request({ type: NBD_CMD_READ, flags: NBD_CMD_FLAG_DF, offset: 0, length: 512 });
  t.is(RawNbdClient.errorOf(await plain.reply()), NBD_EINVAL, 'DF is not allowed without structured replies');
});

test('block status: a chunk per selected context; REQ_ONE gives exactly one extent', async (t) => {
  const { node, connect } = await memoryExport(t, 8 * MiB, { 'allocation-depth': true });
  await node.write(2 * MiB, Buffer.alloc(MiB, 1));
  const { client, contexts } = await connect(['base:allocation', 'qemu:allocation-depth']);
  t.deepEqual([...contexts], [['base:allocation', 0], ['qemu:allocation-depth', 1]]);
  const extents = (chunk: Chunk) => {
    const out: [number, number][] = [];
    for (let at = 4; at < chunk.payload.length; at += 8) out.push([chunk.payload.readUInt32BE(at), chunk.payload.readUInt32BE(at + 4)]);
    return [chunk.payload.readUInt32BE(0), out] as const;
  };
  client.request({ type: NBD_CMD_BLOCK_STATUS, offset: MiB, length: 6 * MiB });
  const all = await client.reply();
  t.true(all.kind === 'structured' && all.chunks.every((c) => c.type === NBD_REPLY_TYPE_BLOCK_STATUS));
  const byContext = new Map(all.kind === 'structured' ? all.chunks.map(extents) : []);
  t.deepEqual(byContext.get(0), [[MiB, 3], [MiB, 0], [4 * MiB, 3]]);
  t.deepEqual(byContext.get(1), [[6 * MiB, 1]], 'a memory node decides all its bytes itself: depth 1');
  client.request({ type: NBD_CMD_BLOCK_STATUS, flags: NBD_CMD_FLAG_REQ_ONE, offset: 0, length: 8 * MiB });
  const one = await client.reply();
  t.deepEqual(new Map(one.kind === 'structured' ? one.chunks.map(extents) : []).get(0), [[2 * MiB, 3]]);
});

test('bad requests are answered with errors and the connection goes on', async (t) => {
  const { node, connect } = await memoryExport(t, 64 * MiB);
  const { client } = await connect();
  const expectError = async (error: number, message: string | RegExp, readLength = 0) => {
    const reply = await client.reply(readLength);
    t.is(RawNbdClient.errorOf(reply), error, String(message));
    if (typeof message === 'string') t.is(RawNbdClient.messageOf(reply), message);
    else t.regex(RawNbdClient.messageOf(reply), message);
  };
  client.request({ type: NBD_CMD_READ, offset: 64 * MiB - 512, length: 1024 });
  await expectError(NBD_EINVAL, `operation past EOF; From: ${64 * MiB - 512}, Len: 1024, Size: ${64 * MiB}`);
  client.request({ type: NBD_CMD_READ, offset: 2 ** 63, length: 512 });
  await expectError(NBD_EINVAL, /^operation past EOF/);
  client.request({ type: NBD_CMD_WRITE, offset: 64 * MiB - 512 }, Buffer.alloc(1024, 1));
  await expectError(NBD_ENOSPC, /^operation past EOF/);
  client.request({ type: 42, offset: 0, length: 0 });
  await expectError(NBD_EINVAL, 'invalid request type (42) received');
  client.request({ type: NBD_CMD_READ, flags: 0x8000, offset: 0, length: 512 });
  await expectError(NBD_EINVAL, 'unsupported flags for command read (got 0x8000)');
  client.request({ type: NBD_CMD_WRITE, flags: NBD_CMD_FLAG_REQ_ONE, offset: 0 }, Buffer.alloc(512));
  await expectError(NBD_EINVAL, 'unsupported flags for command write (got 0x8)');
  client.request({ type: NBD_CMD_READ, offset: 0, length: 32 * MiB + 1 });
  await expectError(NBD_EINVAL, `len (${32 * MiB + 1}) is larger than max len (${32 * MiB})`);
  client.request({ type: NBD_CMD_WRITE, offset: 0 }, Buffer.alloc(32 * MiB + 512, 9));
  await expectError(NBD_EINVAL, `len (${32 * MiB + 512}) is larger than max len (${32 * MiB})`);
  client.request({ type: NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 });
  await expectError(NBD_EINVAL, 'CMD_BLOCK_STATUS not negotiated');
  // The stream is still in step: a 32 MiB write (the maximum) and its read-back work.
  const big = Buffer.alloc(32 * MiB, 0x3c);
  client.request({ type: NBD_CMD_WRITE, flags: NBD_CMD_FLAG_FUA, offset: 16 * MiB }, big);
  t.is(RawNbdClient.errorOf(await client.reply()), 0);
  client.request({ type: NBD_CMD_READ, flags: NBD_CMD_FLAG_DF, offset: 16 * MiB, length: 32 * MiB });
  const back = await client.reply();
  t.true(back.kind === 'structured' && back.chunks[0]!.payload.subarray(8).equals(big));
  const stored = Buffer.alloc(512);
  await node.read(0, stored);
  t.true(stored.every((b) => b === 0), 'refused writes changed nothing');
});

test('a read-only export refuses WRITE, TRIM and WRITE_ZEROES with EPERM (payload consumed); reads and flushes work', async (t) => {
  const { node, connect } = await memoryExport(t, MiB, { writable: false });
  await node.write(0, Buffer.alloc(4096, 0x77));
  const { client, flags } = await connect();
  t.is(flags, 0x058f, 'READ_ONLY, and what qemu-storage-daemon sends for a read-only export');
  client.request({ type: NBD_CMD_WRITE, offset: 0 }, Buffer.alloc(4096, 1));
  t.is(RawNbdClient.errorOf(await client.reply()), NBD_EPERM);
  client.request({ type: NBD_CMD_TRIM, offset: 0, length: 4096 });
  t.is(RawNbdClient.errorOf(await client.reply()), NBD_EPERM);
  client.request({ type: NBD_CMD_WRITE_ZEROES, offset: 0, length: 4096 });
  const zero = await client.reply();
  t.is(RawNbdClient.errorOf(zero), NBD_EPERM);
  t.is(RawNbdClient.messageOf(zero), 'export is read-only');
  client.request({ type: NBD_CMD_FLUSH });
  t.is(RawNbdClient.errorOf(await client.reply()), 0);
  client.request({ type: NBD_CMD_READ, offset: 0, length: 4096 });
  const read = await client.reply();
  t.true(read.kind === 'structured' && read.chunks[0]!.payload.subarray(8).equals(Buffer.alloc(4096, 0x77)));
});

test('requests run concurrently and each reply carries its cookie; DISC answers what is in flight, then closes', async (t) => {
  const { connect } = await memoryExport(t, 16 * MiB);
  const { client } = await connect();
  const cookies = Array.from({ length: 40 }, (_, i) => client.request({ type: NBD_CMD_WRITE, cookie: BigInt(1000 + i), offset: i * 256 * KiB }, Buffer.alloc(256 * KiB, i + 1)));
  cookies.push(client.request({ type: NBD_CMD_READ, cookie: 0xffffffffffffffffn, offset: 0, length: 4096 }));
  client.request({ type: NBD_CMD_DISC });
  const seen: bigint[] = [];
  for (let i = 0; i < cookies.length; i++) {
    const reply = await client.reply();
    t.is(RawNbdClient.errorOf(reply), 0);
    seen.push(reply.cookie);
  }
  t.deepEqual([...seen].sort(), [...cookies].sort());
  await client.closed;
});

test('a bad request magic or a WRITE too large to skip ends that connection only', async (t) => {
  const { connect } = await memoryExport(t, MiB);
  const { client: bystander } = await connect();
  const { client: badMagic } = await connect();
  badMagic.send(Buffer.alloc(28, 0xde));
  await badMagic.closed;
  const { client: hugeWrite } = await connect();
  hugeWrite.request({ type: NBD_CMD_WRITE, offset: 0, length: 0xfffffff0 });
  await hugeWrite.closed;
  bystander.request({ type: NBD_CMD_WRITE, offset: 0 }, Buffer.alloc(512, 3));
  t.is(RawNbdClient.errorOf(await bystander.reply()), 0);
  t.is(bystander.socket.destroyed, false);
});
