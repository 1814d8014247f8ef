/**
 * QmpJsonStream against QEMU's own behaviour. Every expectation below was
 * recorded from qemu-storage-daemon 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)
 * over its QMP socket: an error is the `desc` of QEMU's reply, a non-object
 * value is what QEMU answered "QMP input must be a JSON object" to, and values
 * inside objects were read back from the echoed `id` of query-version.
 * Limit tests use small limits; QEMU's (1024 / 64 MiB / 2 Mi tokens) were
 * recorded at their real size and are scaled down here.
 */
import test from 'ava';
import { QEMU_JSON_STREAM_LIMITS, QmpJsonStream } from '../../../core/qmp/qmp-json-stream.js';
import type { QmpJsonStreamLimits } from '../../../core/qmp/qmp-json-stream.js';
import { randomFloats } from '../../helpers/prng.js';

type Event = { value: unknown } | { error: string };

const v = (value: unknown): Event => ({ value });
const e = (desc: string): Event => ({ error: desc });
const parseError = (what: string): Event => e(`JSON parse error, ${what}`);
const repeat = (event: Event, times: number): Event[] => Array.from({ length: times }, () => event);

/** Test inputs are written as byte strings: '\xff' is the byte 0xFF. */
const bytes = (text: string): Buffer => Buffer.from(text, 'latin1');

function run(chunks: Buffer[], limits: Partial<QmpJsonStreamLimits> = {}): Event[] {
  const events: Event[] = [];
  const stream = new QmpJsonStream({ value: (value) => events.push(v(value)), error: (desc) => events.push(e(desc)) }, limits);
  for (const chunk of chunks) stream.push(chunk);
  return events;
}

/** `input` cut into chunks of the sizes `size()` returns. */
function split(input: Buffer, size: () => number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let pos = 0; pos < input.length; pos += chunks.at(-1)?.length ?? 0) chunks.push(input.subarray(pos, pos + size()));
  return chunks;
}

/** The events for `input`, checked to be the same whole, byte by byte and in random chunks. */
function feed(input: Buffer, limits: Partial<QmpJsonStreamLimits> = {}): Event[] {
  const whole = run([input], limits);
  const next = randomFloats(input.length);
  for (const size of [() => 1, () => 1 + Math.floor(next() * 5), () => 1 + Math.floor(next() * 300)]) {
    const events = run(split(input, size), limits);
    if (JSON.stringify(events) !== JSON.stringify(whole)) throw new Error(`chunking changed the result of ${input.toString('latin1')}`);
  }
  return whole;
}

const OBJECT_REQUEST = { execute: 'query-version', id: 'a' };

const cases: [string, string, Event[]][] = [
  // Framing: no delimiter, values split or packed, whitespace ignored.
  ['one object', '{"execute": "query-version"}', [v({ execute: 'query-version' })]],
  ['object over two lines', '{"execute": "query-version"\n}', [v({ execute: 'query-version' })]],
  ['two objects on one line', '{"execute":"query-version","id":"a"}{"execute":"query-jobs","id":"b"}', [v(OBJECT_REQUEST), v({ execute: 'query-jobs', id: 'b' })]],
  ['whitespace only', '  \r\n\t ', []],
  ['non-objects are values too', '[1,2]"hello" "a" "b"[]{}', [v([1, 2]), v('hello'), v('a'), v('b'), v([]), v({})]],
  ['keyword ends at a digit', 'null1 ', [v(null), v(1)]],
  // QEMU extensions: single quotes and the \' escape.
  ['single-quoted strings', "{'execute':'query-version','id':'sq'}", [v({ execute: 'query-version', id: 'sq' })]],
  ["\\' in single quotes", "'it\\'s'", [v("it's")]],
  ['" in single quotes', "'a\"b'", [v('a"b')]],
  ["\\' in double quotes", '"a\\\'b"', [v("a'b")]],
  ['\\" in single quotes', "'\\\"'", [v('"')]],
  ['% is plain text in a string', '"100%"', [v('100%')]],
  // Values.
  ['escapes', '"\xc3\xa9/\\/\\b\\f\\n\\r\\t\\"\\\\\x7f"', [v('é//\b\f\n\r\t"\\\x7f')]],
  ['\\u escapes', '"\\u00e9\\u00E9\\u0041"', [v('ééA')]],
  ['surrogate pair escape', '"\\uD83D\\uDE00"', [v('😀')]],
  ['raw 4-byte UTF-8', '"\xf0\x9f\x98\x80"', [v('😀')]],
  ['\\u0000', '"\\u0000"', [v('\0')]],
  ['modified UTF-8 NUL', '"\xc0\x80"', [v('\0')]],
  ['DEL in single quotes', "'\x7f'", [v('\x7f')]],
  ['numbers', '[1.5E+3,0.5,-12,1.0,1e20,1e-400]', [v([1500, 0.5, -12, 1, 1e20, 0])]],
  ['integer -0 is 0', '-0 ', [v(0)]],
  ['float -0.0 keeps its sign', '-0.0 ', [v(-0)]],
  ['out of double range', '[1e999,-1e999]', [v([Infinity, -Infinity])]],
  ['beyond uint64 becomes a double', '18446744073709551616 ', [v(2 ** 64)]],
  ['keywords and nesting', '{"b":1,"a":[true,false,null],"c":{}}', [v({ b: 1, a: [true, false, null], c: {} })]],
  // Syntax errors, one reply per message.
  ['invalid keyword', 'garbage\n', [parseError("invalid keyword 'garbage'")]],
  ['keyword with a letter QEMU lacks', 'truefalse ', [parseError("invalid keyword 'truefalse'")]],
  ['missing value', '{"execute": }', [parseError('expecting value')]],
  ['missing colon', '{"execute" "x"}', [parseError('missing : in object pair')]],
  ['missing separator in dict', '{"execute":"x" "id":1}', [parseError('expected separator in dict')]],
  ['missing separator in list', '[1 2]', [parseError('expected separator in list')]],
  ['key not a string', '{1:2}', [parseError('key is not a string in object')]],
  ['object as key', '{{"x":1}:2}', [parseError('key is not a string in object')]],
  ['duplicate key', '{"a":1,"a":2}', [parseError('duplicate key')]],
  ['first error wins', '{"a":1,"a":{"b" 2}}', [parseError('missing : in object pair')]],
  ['invalid keyword as value', '{"a":tru}', [parseError("invalid keyword 'tru'")]],
  ['trailing comma in list', '[1,]', [parseError('expecting value')]],
  ['leading comma in list', '[,1]', [parseError('expecting value')]],
  ['comma in empty object', '{,}', [parseError('expecting value')]],
  ['trailing comma in object', '{"a":1,}', [parseError('expecting value')]],
  ['missing colon before ]', '{"a"]', [parseError('missing : in object pair')]],
  ['value missing before ]', '{"a":]', [parseError('expecting value')]],
  ['mismatched closers', '[}{][{]}{[}]{"a":[}]', repeat(parseError('expecting value'), 5)],
  ['stray closers and separators', '}]:,', repeat(parseError('expecting value'), 4)],
  ['extra closer', '{"a":1}}', [v({ a: 1 }), parseError('expecting value')]],
  ['invalid escape', '"\\q"', [parseError('invalid escape sequence in string')]],
  ['lone high surrogate', '"\\uD800"', [parseError('\\uD800 is not a valid Unicode character')]],
  ['lone low surrogate', '"\\uDC00"', [parseError('\\uDC00 is not a valid Unicode character')]],
  ['high surrogate + non-surrogate', '"\\uD800\\u0041"', [parseError('\\uD800 is not a valid Unicode character')]],
  ['high surrogate + bad escape', '"\\uD800\\uZZZZ"', [parseError('\\uD800 is not a valid Unicode character')]],
  ['high surrogate + short escape', '"\\uD800\\u"', [parseError('\\uD800 is not a valid Unicode character')]],
  ['noncharacter escape', '"\\uFFFE"', [parseError('\\uFFFE is not a valid Unicode character')]],
  ['noncharacter escape FDD0', '"\\uFDD0"', [parseError('\\uFDD0 is not a valid Unicode character')]],
  ['non-hex escape', '"\\u12G4"', [parseError('\\u12G4 is not a valid Unicode character')]],
  ['short escape shows the quote', '"\\u12"', [parseError('\\u12" is not a valid Unicode character')]],
  ['shorter escape', '"\\u00"', [parseError('\\u00" is not a valid Unicode character')]],
  ['escape quoted with UTF-8', '"\\u12\xc3\xa9"', [parseError('\\u12é is not a valid Unicode character')]],
  ['truncated UTF-8', '"\xc3"', [parseError('invalid UTF-8 sequence in string')]],
  ['UTF-8 surrogate', '"\xed\xa0\x80"', [parseError('invalid UTF-8 sequence in string')]],
  ['UTF-8 noncharacter', '"\xef\xbf\xbe"', [parseError('invalid UTF-8 sequence in string')]],
  ['beyond U+10FFFF', '"\xf4\x90\x80\x80"', [parseError('invalid UTF-8 sequence in string')]],
  ['overlong UTF-8', '"\xe0\x80\xaf"', [parseError('invalid UTF-8 sequence in string')]],
  ['lone continuation byte', '"\x80"', [parseError('invalid UTF-8 sequence in string')]],
  // Lexical errors: "stray" quotes the rejected token, then input is skipped
  // up to a structural character, a control character other than TAB, or 0xFE/0xFF.
  ['0xFF', '\xff', [parseError("stray '\uFFFD'")]],
  ['0xFE', '\xfe', [parseError("stray '\uFFFD'")]],
  ['control character', '\x01', [parseError("stray '\u0001'")]],
  ['DEL', '\x7f', [parseError("stray '\u007F'")]],
  ['NUL', '\x00', [parseError("stray ''")]],
  ['NUL ends the quoted token', '"ab\x00cd"', [parseError('stray \'"ab\'')]],
  ['0xFE in a string', '"\xfe"', [parseError('stray \'"\uFFFD\'')]],
  ['newline in a string', '"abc\n', [parseError('stray \'"abc\n\'')]],
  ['control character after backslash', '"\\\x01', [parseError('stray \'"\\\u0001\'')]],
  ['leading zero', '01', [parseError("stray '01'")]],
  ['minus without digits', '-a', [parseError("stray '-a'")]],
  ['fraction without digits', '1.}', [parseError("stray '1.}'")]],
  ['exponent without digits', '1.5ex', [parseError("stray '1.5ex'")]],
  ['upper-case letter', 'True', [parseError("stray 'T'")]],
  ['no interpolation from the wire', '%d', [parseError("stray '%'")]],
  ['other punctuation', '@', [parseError("stray '@'")]],
  ['non-ASCII outside strings', '\xc3\xa9', [parseError("stray '\uFFFD'")]],
  ['keyword then non-ASCII', 'x\xc3\xa9y', [parseError("invalid keyword 'x'"), parseError("stray '\uFFFD'")]],
  ['keyword then upper case', 'nulL ', [parseError("invalid keyword 'nul'"), parseError("stray 'L'")]],
  ['keyword then digit', 'nullx1 ', [parseError("invalid keyword 'nullx'"), v(1)]],
  // Invalid UTF-8 in a stray token is shown one U+FFFD per bad sequence.
  ['stray UTF-8 surrogate', '"\xed\xa0\x80\x01', [parseError('stray \'"\uFFFD\u0001\'')]],
  ['stray truncated sequence', '"\xe0\x80\x01', [parseError('stray \'"\uFFFD\u0001\'')]],
  ['stray 6-byte sequence', '"\xfc\x80\x80\x80\x80\x80\x01', [parseError('stray \'"\uFFFD\u0001\'')]],
  ['stray 5-byte sequence', '"\xf8\x88\x80\x80\x80z\x01', [parseError('stray \'"\uFFFDz\u0001\'')]],
  ['stray modified UTF-8 NUL', '"\xc0\x80\x01', [parseError('stray \'"\u0000\u0001\'')]],
  ['stray noncharacter', '"\xef\xbf\xbe\x01', [parseError('stray \'"\uFFFD\u0001\'')]],
  ['stray continuation bytes', '"\x80\x80\x01', [parseError('stray \'"\uFFFD\uFFFD\u0001\'')]],
  ['stray overlong', '"\xc1\x81\x01', [parseError('stray \'"\uFFFD\u0001\'')]],
  ['stray valid UTF-8', '"\xc3\xa9\xf0\x9f\x98\x80\x01', [parseError('stray \'"é😀\u0001\'')]],
  // Recovery.
  ['error inside an object drops it', '{"a":"abc\x01def"}', [parseError('stray \'"abc\u0001\''), parseError('expecting value')]],
  ['stray token inside an object', '{"a": @}', [parseError("stray '@'"), parseError('expecting value')]],
  ['control character resets the parser', '{"a":[1,\x01{"execute":"query-version","id":"a"}', [parseError("stray '\u0001'"), v(OBJECT_REQUEST)]],
  ['skipping stops at , not at space or tab', '@ \t x , y\n', [parseError("stray '@'"), parseError('expecting value'), parseError("invalid keyword 'y'")]],
  ['skipping stops at newline', '@\tx\n1 ', [parseError("stray '@'"), v(1)]],
  ['strings are skipped too', '@ "abc" 1 {"execute":"query-version","id":"a"}', [parseError("stray '@'"), v(OBJECT_REQUEST)]],
  ['skipping swallows the rest of the value', '-{"execute":"query-jobs","id":"SYNC"}', [
    parseError("stray '-{'"), parseError('expecting value'), v('query-jobs'), parseError('expecting value'), v('id'), parseError('expecting value'), v('SYNC'), parseError('expecting value'),
  ]],
];

for (const [title, input, expected] of cases) {
  test(`QEMU 7.2: ${title}`, (t) => {
    t.deepEqual(feed(bytes(input)), expected);
  });
}

test('a value may stop anywhere, even inside a UTF-8 sequence', (t) => {
  const input = Buffer.from('{"execute":"query-version","id":"é€😀"}', 'utf8');
  for (let cut = 1; cut < input.length; cut++) {
    t.deepEqual(run([input.subarray(0, cut), input.subarray(cut)]), [v({ execute: 'query-version', id: 'é€😀' })], `cut at ${cut}`);
  }
});

test('object members keep their order, and __proto__ is a plain member', (t) => {
  const [event] = feed(bytes('{"b":1,"a":2,"__proto__":{"x":1},"c":3}'));
  const value = event !== undefined && 'value' in event ? (event.value as Record<string, unknown>) : {};
  t.deepEqual(Object.keys(value), ['b', 'a', '__proto__', 'c']);
  t.is(Object.getPrototypeOf(value), Object.prototype);
  t.deepEqual(Object.getOwnPropertyDescriptor(value, '__proto__')?.value, { x: 1 });
});

test('the invalid-keyword message is cut at 1023 bytes like QEMU', (t) => {
  const message = (length: number): string => {
    const [event] = feed(bytes(`${'a'.repeat(length)}\n`));
    return event !== undefined && 'error' in event ? event.error : '';
  };
  t.is(message(1005), `JSON parse error, invalid keyword '${'a'.repeat(1005)}'`);
  t.is(message(1006), `JSON parse error, invalid keyword '${'a'.repeat(1006)}`);
  t.is(message(1100), `JSON parse error, invalid keyword '${'a'.repeat(1006)}`);
});

test('defaults are QEMU 7.2 json-streamer limits', (t) => {
  t.deepEqual(QEMU_JSON_STREAM_LIMITS, { maxDepth: 1024, maxValueBytes: 64 * 1024 * 1024, maxTokens: 2 * 1024 * 1024 });
});

/** Summary of events: depth of nested arrays instead of the arrays themselves. */
function summary(events: Event[]): string[] {
  const depth = (value: unknown): number => (Array.isArray(value) ? 1 + depth(value[0]) : 0);
  return events.map((event) => ('error' in event ? event.error : `value depth ${depth(event.value)}`));
}

test('nesting: 1024 levels pass, the 1025th opener is refused', (t) => {
  t.deepEqual(summary(feed(bytes('['.repeat(1024) + ']'.repeat(1024)))), ['value depth 1024']);
  t.deepEqual(summary(feed(bytes('['.repeat(1025)))), ['JSON nesting depth limit exceeded']);
  // The rest of the input is read afresh: 75 openers form a value, 1025 closers are stray.
  t.deepEqual(summary(feed(bytes('['.repeat(1100) + ']'.repeat(1100)))), [
    'JSON nesting depth limit exceeded',
    'value depth 75',
    ...Array<string>(1025).fill('JSON parse error, expecting value'),
  ]);
});

test('nesting counts braces and brackets together', (t) => {
  t.deepEqual(feed(bytes('[{'.repeat(512) + '}]'.repeat(512))), [parseError('key is not a string in object')]);
  t.deepEqual(feed(bytes(`${'[{'.repeat(512)}[`)), [e('JSON nesting depth limit exceeded')]);
  const objects = feed(bytes(`${'{"a":'.repeat(1025)}1${'}'.repeat(1025)}`));
  t.deepEqual(objects, [e('JSON nesting depth limit exceeded'), v('a'), parseError('expecting value'), v(1), ...repeat(parseError('expecting value'), 1025)]);
  t.deepEqual(feed(bytes('['.repeat(3) + ']'.repeat(3)), { maxDepth: 2 }), [e('JSON nesting depth limit exceeded'), ...repeat(parseError('expecting value'), 3)]);
});

// QEMU: a token of 64 MiB - 1 bytes passes, 64 MiB fails; same scaled to 64 bytes.
const SIZE = { maxValueBytes: 64 };
const quoted = (length: number): string => `"${'a'.repeat(length - 2)}"`;

test('size limit: a message may hold maxValueBytes - 1 bytes of tokens', (t) => {
  t.deepEqual(feed(bytes(quoted(63)), SIZE), [v('a'.repeat(61))]);
  t.deepEqual(feed(bytes(quoted(64)), SIZE), [e('JSON token size limit exceeded')]);
  t.deepEqual(feed(bytes(quoted(65)), SIZE), [e('JSON token size limit exceeded')]);
  // Counted over all tokens of the message: [ + 34 + , + 24 + ] = 61 bytes.
  t.deepEqual(feed(bytes(`[${quoted(34)},${quoted(24)}]`), SIZE), [v(['a'.repeat(32), 'a'.repeat(22)])]);
  t.deepEqual(feed(bytes(`[${quoted(34)},${quoted(29)}]`), SIZE), [e('JSON token size limit exceeded'), parseError('expecting value')]);
});

test('size limit: an endless token is cut off and the rest read afresh', (t) => {
  // QEMU: '"' + 'a' x (64 MiB + 3) + ' 1 ' gave these three replies.
  t.deepEqual(feed(bytes(`"${'a'.repeat(67)} 1 `), SIZE), [e('JSON token size limit exceeded'), parseError("invalid keyword 'aaa'"), v(1)]);
});

// QEMU: exactly 2 Mi tokens pass, one more fails; same scaled to 16 tokens.
test('token count limit', (t) => {
  const limits = { maxTokens: 16 };
  t.deepEqual(feed(bytes(`[${'1,'.repeat(6)}[]]`), limits), [v([1, 1, 1, 1, 1, 1, []])]);
  t.deepEqual(feed(bytes(`[${'1,'.repeat(7)}1]`), limits), [e('JSON token count limit exceeded')]);
});

test('memory stays bounded while a peer streams garbage', (t) => {
  const limits = { maxValueBytes: 4096, maxTokens: 1024, maxDepth: 64 };
  const floods: [string, Buffer, Buffer, number][] = [
    ['unterminated string', bytes('"'), bytes('x'.repeat(65536)), 4097],
    ['endless keyword', bytes(''), bytes('x'.repeat(65536)), 4097],
    ['endless nesting', bytes(''), bytes('['.repeat(65536)), 65],
  ];
  for (const [name, start, chunk, bytesPerError] of floods) {
    let errors = 0;
    const stream = new QmpJsonStream({ value: () => t.fail(name), error: () => errors++ }, limits);
    const before = process.memoryUsage().heapUsed;
    stream.push(start);
    const chunks = 16; // 1 MiB, 256 times the size limit
    for (let i = 0; i < chunks; i++) stream.push(chunk);
    const grown = process.memoryUsage().heapUsed - before;
    t.true(grown < 8 * 1024 * 1024, `${name}: heap grew ${grown} bytes`);
    t.is(errors, Math.floor((start.length + chunks * chunk.length) / bytesPerError), name);
  }
});
