/**
 * Structured replies as a server may legally (or not) send them, from the
 * fake server: chunks out of order and interleaved across requests, holes,
 * error chunks, simple replies after structured ones, and hostile lengths.
 */
import test from 'ava';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
} from '../../../core/protocols/nbd/constants.js';
import {
  encodeBlockStatus,
  encodeChunkHeader,
  encodeErrorChunk,
  encodeOffsetDataHeader,
  encodeOffsetHole,
  encodeSimpleReply,
  type NbdRequest,
} from '../../../core/protocols/nbd/transmission.js';
import { FAKE_CONTEXT_ID, FakeNbdServer, type FakeConnection, type FakeServerOptions } from './fake-server.js';
import { filled, KiB, nbdFixture, readNode, sameBytes } from './fixture.js';

type Handler = NonNullable<FakeServerOptions['onRequest']>;

async function setUp(t: Parameters<typeof nbdFixture>[0], onRequest: Handler, size = 64 * KiB) {
  const f = await nbdFixture(t);
  const fake = await FakeNbdServer.start(f.dir, { size, onRequest });
  t.teardown(() => fake.close());
  const node = await f.graph.add({ driver: 'nbd', 'node-name': 'n', server: fake.address });
  return { fake, node };
}

test('sparse reads: data and hole chunks in any order, interleaved with another request, reassembled by offset', async (t) => {
  const held: [NbdRequest, FakeConnection][] = [];
  const { fake, node } = await setUp(t, (request, c) => {
    if (request.type !== NBD_CMD_READ) return false;
    held.push([request, c]);
    if (held.length < 2) return true;
    // Both reads are in flight: answer them chunk by chunk, alternating, the second read first.
    const [[a], [b]] = held as [[NbdRequest, FakeConnection], [NbdRequest, FakeConnection]];
    const half = (r: NbdRequest) => r.length / 2;
    c.send(encodeOffsetHole(0, b.cookie, b.offset + half(b), half(b)));
    c.send(encodeOffsetDataHeader(0, a.cookie, a.offset + half(a), half(a)), fake.data.subarray(a.offset + half(a), a.offset + a.length));
    c.send(encodeOffsetDataHeader(NBD_REPLY_FLAG_DONE, b.cookie, b.offset, half(b)), fake.data.subarray(b.offset, b.offset + half(b)));
    c.send(encodeOffsetHole(NBD_REPLY_FLAG_DONE, a.cookie, a.offset, half(a)));
    return true;
  });
  fake.data.fill(0x77);
  const [first, second] = await Promise.all([readNode(node, 0, 8 * KiB), readNode(node, 32 * KiB, 8 * KiB)]);
  sameBytes(t, first, Buffer.concat([filled(4 * KiB, 0), filled(4 * KiB, 0x77)]));
  sameBytes(t, second, Buffer.concat([filled(4 * KiB, 0x77), filled(4 * KiB, 0)]));
});

test('an error chunk fails only its request, with the errno the server sent; the connection goes on', async (t) => {
  const { node } = await setUp(t, (request, c) => {
    if (request.type === NBD_CMD_READ && request.offset === 0) {
      c.send(encodeOffsetDataHeader(0, request.cookie, 0, 512), filled(512, 1));
      c.send(encodeErrorChunk(NBD_REPLY_FLAG_DONE, request.cookie, NBD_REPLY_TYPE_ERROR_OFFSET, { error: NBD_EIO, message: 'bad sector', offset: 512 }));
      return true;
    }
    if (request.type === NBD_CMD_WRITE) {
      // nbdkit answers a failed write with a simple reply even after structured replies were agreed.
      c.send(encodeSimpleReply(NBD_ENOSPC, request.cookie));
      return true;
    }
    if (request.type === NBD_CMD_READ && request.offset === 4096) {
      c.send(encodeErrorChunk(0, request.cookie, 0x8005, { error: NBD_EIO, message: '' }));
      c.send(encodeOffsetDataHeader(NBD_REPLY_FLAG_DONE, request.cookie, 4096, 4096), filled(4096, 2));
      return true;
    }
    return false;
  });
  await t.throwsAsync(readNode(node, 0, 4096), { name: 'BlockIoError', message: 'Input/output error', instanceOf: Error });
  await t.throwsAsync(node.write(8192, filled(512, 3)), { message: 'No space left on device' });
  await t.throwsAsync(readNode(node, 4096, 4096), { message: 'Invalid argument' }, 'an unknown error chunk type is EINVAL');
  sameBytes(t, await readNode(node, 16 * KiB, 512), filled(512, 0), 'still connected');
});

test('block status: hole/zero flags, extents past the request clipped, other contexts ignored, many extents bounded', async (t) => {
  const { node } = await setUp(t, (request, c) => {
    if (request.type !== NBD_CMD_BLOCK_STATUS) return false;
    if (request.offset === 0) {
      c.send(encodeBlockStatus(0, request.cookie, FAKE_CONTEXT_ID + 1, [{ length: 512, flags: 0 }]));
      c.send(
        encodeBlockStatus(NBD_REPLY_FLAG_DONE, request.cookie, FAKE_CONTEXT_ID, [
          { length: 4096, flags: 0 },
          { length: 4096, flags: NBD_STATE_HOLE | NBD_STATE_ZERO },
          { length: 4096, flags: NBD_STATE_ZERO },
          { length: 1 << 30, flags: NBD_STATE_HOLE },
        ]),
      );
    } else {
      // 100000 one-byte extents (800 KB): the client keeps a bounded number and asks again.
      c.send(encodeBlockStatus(NBD_REPLY_FLAG_DONE, request.cookie, FAKE_CONTEXT_ID, Array.from({ length: 100000 }, () => ({ length: 1, flags: 0 }))));
    }
    return true;
  });
  const status = await node.blockStatus(0, 32 * KiB);
  t.deepEqual(
    status.map(({ offset, length, data, zero }) => ({ offset, length, data, zero })),
    [
      { offset: 0, length: 4096, data: true, zero: false },
      { offset: 4096, length: 4096, data: false, zero: true },
      { offset: 8192, length: 4096, data: true, zero: true },
      { offset: 12288, length: 20480, data: false, zero: false },
    ],
  );
  t.deepEqual(await node.blockStatus(40 * KiB, 9000), [{ offset: 40 * KiB, length: 9000, data: true, zero: false, allocated: true, hostOffset: 40 * KiB }]);
});

test('a protocol violation drops the connection: requests in flight and later fail with EIO, clearly worded', async (t) => {
  const { node } = await setUp(t, (request, c) => {
    if (request.offset !== 0) return true;
    // An OFFSET_DATA chunk claiming 4 GiB for a 4 KiB read: refused from the header, nothing allocated.
    c.send(encodeChunkHeader({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie: request.cookie, length: 0xffffffff }));
    return true;
  });
  const pending = readNode(node, 8192, 4096);
  await t.throwsAsync(readNode(node, 0, 4096), { message: /NBD protocol error: server sent chunk exceeding requested region/ });
  await t.throwsAsync(pending, { message: /NBD protocol error/ });
  await t.throwsAsync(readNode(node, 16384, 4096), {
    message: /^Connection to NBD server '.*fake\.sock' failed: NBD protocol error: server sent chunk exceeding requested region$/,
  });
});

test('replies to cookies nobody asked for, and error chunks with error 0, are protocol violations', async (t) => {
  const { node } = await setUp(t, (request, c) => {
    c.send(encodeSimpleReply(0, request.cookie + 1000n));
    return true;
  });
  await t.throwsAsync(node.flush(), { message: /NBD protocol error: unexpected cookie value/ });
  const other = await setUp(t, (request, c) => {
    const chunk = encodeErrorChunk(NBD_REPLY_FLAG_DONE, request.cookie, NBD_REPLY_TYPE_ERROR, { error: 1, message: 'x' });
    chunk.writeUInt32BE(0, 20);
    c.send(chunk);
    return true;
  });
  await t.throwsAsync(readNode(other.node, 0, 512), { message: /error chunk with error = 0/ });
});
