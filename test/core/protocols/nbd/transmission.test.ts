/** Requests, reply headers and chunk payloads against the reference's golden bytes, round trips and bad input. */
import test from 'ava';
import {
  NBD_CMD_READ,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
} from '../../../../core/protocols/nbd/constants.js';
import {
  decodeErrorChunk,
  decodeExtents,
  decodeOffset,
  decodeOffsetHole,
  decodeReplyHeader,
  decodeRequest,
  encodeBlockStatus,
  encodeChunkHeader,
  encodeErrorChunk,
  encodeOffsetDataHeader,
  encodeOffsetHole,
  encodeRequest,
  encodeSimpleReply,
  isErrorChunk,
  replyHeaderSize,
} from '../../../../core/protocols/nbd/transmission.js';
import { NbdProtocolError } from '../../../../core/protocols/nbd/wire.js';

const hex = (text: string) => Buffer.from(text.replace(/[\s|]/g, ''), 'hex');
const COOKIE = 0x1122334455667788n;

test('golden bytes: a READ request, an OFFSET_DATA header, a simple reply', (t) => {
  const read = { flags: 0, type: NBD_CMD_READ, cookie: COOKIE, offset: 0, length: 4096 };
  const bytes = hex('25609513 0000 0000 1122334455667788 0000000000000000 00001000');
  t.deepEqual(encodeRequest(read), bytes);
  t.deepEqual(decodeRequest(bytes), read);
  t.deepEqual(
    encodeOffsetDataHeader(NBD_REPLY_FLAG_DONE, COOKIE, 0, 4096),
    hex('668e33ef 0001 0001 1122334455667788 00001008 0000000000000000'),
  );
  const simple = hex('67446698 0000001c 1122334455667788');
  t.deepEqual(encodeSimpleReply(NBD_ENOSPC, COOKIE), simple);
  t.deepEqual(decodeReplyHeader(simple), { kind: 'simple', error: NBD_ENOSPC, cookie: COOKIE });
});

test('golden bytes: qemu’s BLOCK_STATUS chunk and nbdkit’s EINVAL error chunk', (t) => {
  const status = hex('668e33ef 0001 0005 1122334455667788 00000014 | 00000000 | 00001000 00000000 | 07fff000 00000003');
  t.deepEqual(encodeBlockStatus(NBD_REPLY_FLAG_DONE, COOKIE, 0, [{ length: 0x1000, flags: 0 }, { length: 0x7fff000, flags: 3 }]), status);
  const header = decodeReplyHeader(status.subarray(0, 20));
  t.deepEqual(header, { kind: 'chunk', flags: 1, type: 5, cookie: COOKIE, length: 20 });
  t.deepEqual(decodeExtents(status.subarray(24)), [{ length: 0x1000, flags: 0 }, { length: 0x7fff000, flags: 3 }]);
  const error = hex('668e33ef 0001 8001 1122334455667788 00000006 | 00000016 0000');
  t.deepEqual(encodeErrorChunk(NBD_REPLY_FLAG_DONE, COOKIE, NBD_REPLY_TYPE_ERROR, { error: NBD_EINVAL, message: '' }), error);
  t.deepEqual(decodeErrorChunk(NBD_REPLY_TYPE_ERROR, error.subarray(20)), { error: NBD_EINVAL, message: '' });
  t.true(isErrorChunk(0x8001));
  t.false(isErrorChunk(5));
});

test('reply magic picks the header size; anything else is a protocol error', (t) => {
  t.is(replyHeaderSize(hex('67446698')), 16);
  t.is(replyHeaderSize(hex('668e33ef')), 20);
  t.throws(() => replyHeaderSize(hex('6e8a278c')), { instanceOf: NbdProtocolError, message: 'invalid reply magic 0x6e8a278c' });
  t.throws(() => decodeRequest(hex('deadbeef 0000 0000 0000000000000000 0000000000000000 00000000')), { message: 'invalid magic (got 0xdeadbeef)' });
});

test('ERROR_OFFSET, OFFSET_HOLE and offsets round-trip; contradictory payloads are refused', (t) => {
  const chunk = encodeErrorChunk(0, 1n, NBD_REPLY_TYPE_ERROR_OFFSET, { error: 5, message: 'bad sector', offset: 4096 });
  t.deepEqual(decodeErrorChunk(NBD_REPLY_TYPE_ERROR_OFFSET, chunk.subarray(20)), { error: 5, message: 'bad sector', offset: 4096 });
  t.throws(() => decodeErrorChunk(NBD_REPLY_TYPE_ERROR, hex('00000000 0000')), { message: /error = 0/ });
  t.throws(() => decodeErrorChunk(NBD_REPLY_TYPE_ERROR, hex('00000005 0009 6162')), { message: /incorrect message size/ });
  t.throws(() => decodeErrorChunk(NBD_REPLY_TYPE_ERROR, hex('000005')), { message: /invalid structured error payload/ });
  const hole = encodeOffsetHole(NBD_REPLY_FLAG_DONE, 2n, 65536, 983040);
  t.deepEqual(decodeReplyHeader(hole.subarray(0, 20)), { kind: 'chunk', flags: 1, type: 2, cookie: 2n, length: 12 });
  t.deepEqual(decodeOffsetHole(hole.subarray(20)), { offset: 65536, length: 983040 });
  t.throws(() => decodeOffsetHole(hex('0000000000000000 00000000')), { message: /OFFSET_HOLE of length 0/ });
  t.throws(() => decodeExtents(hex('00000001 000000')), { message: /BLOCK_STATUS/ });
  t.is(decodeOffset(hex('0000000000010000')), 65536);
  t.deepEqual(encodeChunkHeader({ flags: 1, type: 0, cookie: 3n, length: 0 }), hex('668e33ef 0001 0000 0000000000000003 00000000'));
});

test('cookies are echoed as full u64s', (t) => {
  const cookie = 0xffffffffffffffffn;
  t.is(decodeRequest(encodeRequest({ flags: 1, type: 1, cookie, offset: 512, length: 512 })).cookie, cookie);
  t.deepEqual(decodeReplyHeader(encodeSimpleReply(0, cookie)), { kind: 'simple', error: 0, cookie });
});
