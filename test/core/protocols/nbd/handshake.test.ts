/**
 * Handshake encoders and decoders against the golden bytes of the NBD
 * reference (§8: observed from qemu-nbd 7.2 and nbdkit 1.32), round trips,
 * and malformed input.
 */
import test from 'ava';
import {
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_UNSUP,
} from '../../../../core/protocols/nbd/constants.js';
import {
  blockSizeProblem,
  decodeClientFlags,
  decodeExportNameReply,
  decodeGreetingMagic,
  decodeInfoReply,
  decodeInfoRequest,
  decodeMetaContextReply,
  decodeMetaContextRequest,
  decodeOldstyleTail,
  decodeOptionHeader,
  decodeOptionReplyHeader,
  decodeServerReply,
  encodeClientFlags,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoReply,
  encodeInfoRequest,
  encodeMetaContextReply,
  encodeMetaContextRequest,
  encodeOption,
  encodeOptionReply,
  encodeServerReply,
  isErrorReply,
} from '../../../../core/protocols/nbd/handshake.js';
import { NbdProtocolError } from '../../../../core/protocols/nbd/wire.js';

const hex = (text: string) => Buffer.from(text.replace(/[\s|]/g, ''), 'hex');

test('golden bytes: greeting, client flags, an option, its ACK', (t) => {
  t.deepEqual(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES), hex('4e42444d41474943 49484156454f5054 0003'));
  t.is(decodeGreetingMagic(hex('4e42444d41474943 49484156454f5054')), 'newstyle');
  t.is(decodeGreetingMagic(hex('4e42444d41474943 0000420281861253')), 'oldstyle');
  t.throws(() => decodeGreetingMagic(hex('4e42444d41474944 49484156454f5054')), { instanceOf: NbdProtocolError, message: 'Invalid magic received' });
  t.deepEqual(encodeClientFlags(3), hex('00000003'));
  t.is(decodeClientFlags(hex('00000003')), 3);
  t.deepEqual(encodeOption(NBD_OPT_STRUCTURED_REPLY), hex('49484156454f5054 00000008 00000000'));
  t.deepEqual(decodeOptionHeader(hex('49484156454f5054 00000008 00000000')), { option: 8, length: 0 });
  t.deepEqual(encodeOptionReply(8, NBD_REP_ACK), hex('0003e889045565a9 00000008 00000001 00000000'));
  t.deepEqual(decodeOptionReplyHeader(hex('0003e889045565a9 00000002 00000001 00000000')), { option: 2, type: NBD_REP_ACK, length: 0 });
  t.throws(() => decodeOptionReplyHeader(hex('0003e889045565aa 00000002 00000001 00000000')), { message: 'Unexpected option reply magic' });
  t.true(isErrorReply(NBD_REP_ERR_UNSUP));
  t.false(isErrorReply(NBD_REP_ACK));
});

test("golden bytes: qemu's REP_INFO payloads for GO, nbdkit's REP_META_CONTEXT", (t) => {
  t.deepEqual(decodeInfoReply(hex('0001 657870')), { info: 'name', name: 'exp' });
  t.deepEqual(decodeInfoReply(hex('0003 00000001 00001000 02000000')), { info: 'block-size', minimum: 1, preferred: 4096, maximum: 32 << 20 });
  t.deepEqual(decodeInfoReply(hex('0000 0000000008000000 0ced')), { info: 'export', size: 128 << 20, flags: 0x0ced });
  t.deepEqual(decodeInfoReply(hex('0009 ffff')), { info: 'unknown', type: 9 }, 'unknown info types are passed over');
  for (const reply of [
    { info: 'export', size: 128 << 20, flags: 0x0ced },
    { info: 'name', name: 'exp' },
    { info: 'description', description: 'a disk' },
    { info: 'block-size', minimum: 512, preferred: 4096, maximum: 1 << 20 },
  ] as const) {
    t.deepEqual(decodeInfoReply(encodeInfoReply(reply)), reply);
  }
  const meta = Buffer.concat([hex('00000001'), Buffer.from('base:allocation')]);
  t.deepEqual(decodeMetaContextReply(meta), { id: 1, name: 'base:allocation' });
  t.deepEqual(encodeMetaContextReply(1, 'base:allocation'), meta);
  t.throws(() => decodeInfoReply(hex('0000 00000000080000')), { message: 'invalid NBD_INFO_EXPORT payload of 9 bytes' });
});

test('INFO/GO and meta context requests round-trip; overruns and bad counts are refused', (t) => {
  const go = encodeInfoRequest('exp', [3, 1]);
  t.deepEqual(go, hex('00000003 657870 0002 0003 0001'));
  t.deepEqual(decodeInfoRequest(go), { exportName: 'exp', infos: [3, 1] });
  t.throws(() => decodeInfoRequest(hex('00000009 657870 0000')), { message: 'INFO/GO name length overruns the option' });
  t.throws(() => decodeInfoRequest(hex('00000003 657870 0002 0003')), { message: 'INFO/GO length does not match its contents' });
  const set = encodeMetaContextRequest('exp', ['base:allocation', 'qemu:dirty-bitmap:b0']);
  t.deepEqual(decodeMetaContextRequest(set), { exportName: 'exp', queries: ['base:allocation', 'qemu:dirty-bitmap:b0'] });
  t.deepEqual(decodeMetaContextRequest(encodeMetaContextRequest('', [])), { exportName: '', queries: [] });
  t.throws(() => decodeMetaContextRequest(hex('00000000 7fffffff')), { message: /query count overruns/ });
  t.throws(() => decodeMetaContextRequest(hex('00000000 00000001 00000010 61')), { message: /query overruns/ });
  t.throws(() => decodeMetaContextRequest(Buffer.concat([set, hex('00')])), { message: /trailing bytes/ });
});

test('strings: NUL bytes and more than 4096 bytes are refused both ways', (t) => {
  t.throws(() => encodeInfoRequest('a\0b', []), { instanceOf: RangeError, message: 'export name contains a NUL byte' });
  t.throws(() => encodeInfoRequest('x'.repeat(4097), []), { message: 'export name is longer than 4096 bytes' });
  t.notThrows(() => encodeInfoRequest('é'.repeat(2048), []));
  const long = Buffer.concat([hex('0001'), Buffer.alloc(4097, 0x61)]);
  t.throws(() => decodeInfoReply(long), { instanceOf: NbdProtocolError, message: 'export name is longer than 4096 bytes' });
  t.throws(() => decodeInfoReply(hex('0001 6100')), { message: 'export name contains a NUL byte' });
});

test('REP_SERVER and the EXPORT_NAME reply, with and without the 124 zero bytes', (t) => {
  t.deepEqual(decodeServerReply(encodeServerReply('exp', 'my disk')), { name: 'exp', description: 'my disk' });
  t.throws(() => decodeServerReply(hex('00000005 6162')), { message: 'NBD_REP_SERVER name overruns the reply' });
  const padded = encodeExportNameReply({ size: 1 << 20, flags: 0x0c6d }, false);
  t.is(padded.length, 134);
  t.true(padded.subarray(10).equals(Buffer.alloc(124)));
  t.is(encodeExportNameReply({ size: 1 << 20, flags: 0x0c6d }, true).length, 10);
  t.deepEqual(decodeExportNameReply(padded.subarray(0, 10)), { size: 1 << 20, flags: 0x0c6d });
  const oldstyle = Buffer.concat([hex('0000000000100000 00000003'), Buffer.alloc(124)]);
  t.deepEqual(decodeOldstyleTail(oldstyle), { size: 1 << 20, flags: 3 });
});

test('sizes past 2^53 are refused rather than rounded', (t) => {
  t.throws(() => decodeInfoReply(hex('0000 0020000000000000 0001')), { message: 'export size 9007199254740992 is too large' });
});

test('block sizes are checked as qemu does', (t) => {
  t.is(blockSizeProblem({ minimum: 1, preferred: 4096, maximum: 32 << 20 }), undefined);
  t.is(blockSizeProblem({ minimum: 512, preferred: 4096, maximum: 0xffffffff }), undefined);
  t.regex(blockSizeProblem({ minimum: 3, preferred: 4096, maximum: 4096 })!, /minimum block size 3 is not a power of two/);
  t.regex(blockSizeProblem({ minimum: 4096, preferred: 512, maximum: 1 << 20 })!, /preferred block size 512 is smaller than minimum/);
  t.regex(blockSizeProblem({ minimum: 4096, preferred: 6000, maximum: 1 << 20 })!, /preferred block size 6000 is not a power of two/);
  t.regex(blockSizeProblem({ minimum: 4096, preferred: 4096, maximum: 5000 })!, /maximum block size 5000 is not a multiple/);
});
