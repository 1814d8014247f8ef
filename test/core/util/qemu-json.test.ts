/**
 * formatQemuJson against QEMU's own output. Expectations were recorded from
 * qemu-storage-daemon 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3): the value is
 * what QEMU parsed from the `id` of a query-version request, the text is how
 * it echoed that id (or a whole reply) on the QMP socket.
 */
import test from 'ava';
import { formatQemuJson } from '../../../core/util/qemu-json.js';

const echoed: [string, unknown, string][] = [
  // Strings: short escapes, upper-case \u, surrogate pairs, '/' left alone.
  ['escapes', 'é//\b\f\n\r\t"\\\x7f', '"\\u00E9//\\b\\f\\n\\r\\t\\"\\\\\\u007F"'],
  ['NUL', '\0', '"\\u0000"'],
  ['beyond the BMP', '😀', '"\\uD83D\\uDE00"'],
  ['apostrophe', "it's", '"it\'s"'],
  ['quote', 'a"b', '"a\\"b"'],
  ['other control characters', '\x01\x1f', '"\\u0001\\u001F"'],
  ['replacement character', 'stray \'\uFFFD\'', '"stray \'\\uFFFD\'"'],
  // Numbers: integers exactly, doubles as "%.17g".
  ['uint64', 18446744073709551615n, '18446744073709551615'],
  ['int64 minimum', -9223372036854775808, '-9223372036854775808'],
  ['2^64 is only a double', 2 ** 64, '1.8446744073709552e+19'],
  ['big double', Number('123456789012345678901234567890'), '1.2345678901234568e+29'],
  ['1e20', 1e20, '1e+20'],
  ['integral double', 1, '1'],
  ['integer from exponent', 1500, '1500'],
  ['0.1', 0.1, '0.10000000000000001'],
  ['0.5', 0.5, '0.5'],
  ['small', 1.5e-7, '1.4999999999999999e-07'],
  ['negative', -12, '-12'],
  ['zero', 0, '0'],
  ['negative zero', -0, '-0'],
  ['infinity', Infinity, 'inf'],
  ['minus infinity', -Infinity, '-inf'],
  // Containers.
  ['empty list', [], '[]'],
  ['empty dict', {}, '{}'],
  ['list', [1500, 0.5, -12, 'A'], '[1500, 0.5, -12, "A"]'],
  ['nested', { x: [1, 2] }, '{"x": [1, 2]}'],
  ['keywords', { a: [true, false, null], b: 1 }, '{"a": [true, false, null], "b": 1}'],
];

for (const [title, value, text] of echoed) {
  test(`QEMU 7.2 writes ${title} as ${text}`, (t) => {
    t.is(formatQemuJson(value), text);
  });
}

test('whole replies, byte for byte', (t) => {
  const version = { qemu: { micro: 22, minor: 2, major: 7 }, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' };
  t.is(
    formatQemuJson({ return: version, id: { x: [1, 2] } }),
    '{"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "id": {"x": [1, 2]}}',
  );
  t.is(
    formatQemuJson({ error: { class: 'GenericError', desc: "JSON parse error, stray '\uFFFD'" } }),
    '{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}',
  );
  t.is(
    formatQemuJson({ error: { class: 'GenericError', desc: 'JSON parse error, stray \'"abc\n\'' } }),
    '{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\"abc\\n\'"}}',
  );
});

test('characters QEMU cannot hold come out as U+FFFD', (t) => {
  // Recorded: a noncharacter in an error desc was shown as \uFFFD.
  t.is(formatQemuJson('\uFFFE\uFDD0'), '"\\uFFFD\\uFFFD"');
  // By the same rule (QEMU rejects encoded surrogates): lone surrogates.
  t.is(formatQemuJson('\uD800x\uDC00'), '"\\uFFFDx\\uFFFD"');
});

test('"%.17g" rounds exact ties to even, like glibc', (t) => {
  // glibc printf("%.17g") on this machine; JS toPrecision would give ...313e-8.
  t.is(formatQemuJson(2 ** -25), '2.9802322387695312e-08');
  t.is(formatQemuJson(5e-324), '4.9406564584124654e-324');
  t.is(formatQemuJson(1.7976931348623157e308), '1.7976931348623157e+308');
  t.is(formatQemuJson(0.0001), '0.0001');
  t.is(formatQemuJson(0.00001), '1.0000000000000001e-05');
  t.is(formatQemuJson(123.456), '123.456');
  t.is(formatQemuJson(NaN), 'nan');
});

test('members keep insertion order and undefined ones are left out', (t) => {
  t.is(formatQemuJson({ b: 1, skipped: undefined, a: 2 }), '{"b": 1, "a": 2}');
});

test('output is pure ASCII without a trailing newline', (t) => {
  const text = formatQemuJson({ s: 'é€😀\u0000\u007f\u0080', n: [0.1, 2 ** 70] });
  t.regex(text, /^[\x20-\x7e]*$/);
  t.false(text.endsWith('\n'));
});

test('values JSON cannot represent are refused', (t) => {
  const cyclic: Record<string, unknown> = {};
  cyclic['self'] = cyclic;
  t.throws(() => formatQemuJson(cyclic), { instanceOf: TypeError });
  t.throws(() => formatQemuJson([undefined]), { instanceOf: TypeError });
  t.throws(() => formatQemuJson(() => 1), { instanceOf: TypeError });
  // Shared (not cyclic) subtrees are fine.
  const shared = [1];
  t.is(formatQemuJson({ a: shared, b: shared }), '{"a": [1], "b": [1]}');
});
