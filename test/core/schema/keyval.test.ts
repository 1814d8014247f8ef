/**
 * QEMU's keyval syntax and its typing. Every expectation below was recorded
 * from qemu-storage-daemon 7.2 (`--blockdev`, `--export`, `--nbd-server`,
 * `--object` with the matching QEMU schema), except the `number` cases,
 * which no qemu-storage-daemon option reaches; those follow
 * qapi/qobject-input-visitor.c.
 */
import test from 'ava';
import { baseNodeMembers } from '../../../core/block/base-options.js';
import { BLOCKDEV_OPTIONS, BlockdevRef, BlockdevRefOrNull } from '../../../core/block/blockdev-ref.js';
import { BlockLayerError } from '../../../core/errors.js';
import { parseJsonOrKeyval, parseKeyval, parseKeyvalHelp, typeKeyval } from '../../../core/schema/keyval.js';
import { QapiValidator } from '../../../core/schema/qapi-validator.js';
import { Qapi, type TSchema } from '../../../core/schema/qapi.js';

function message(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof BlockLayerError) return error.message;
    throw error;
  }
  return 'no error';
}

test('key=value pairs, commas, nesting and lists', (t) => {
  const cases: [string, string | undefined, unknown][] = [
    ['driver=null-co,node-name=n', undefined, { driver: 'null-co', 'node-name': 'n' }],
    ['driver=null-co,node-name=n,', undefined, { driver: 'null-co', 'node-name': 'n' }],
    ['', undefined, {}],
    ['driver=null-co,,node-name=n', undefined, { driver: 'null-co,node-name=n' }],
    ['a=1,,,b=2', undefined, { a: '1,', b: '2' }],
    ['a=b=c', undefined, { a: 'b=c' }],
    ['a=', undefined, { a: '' }],
    ['node-name=n,node-name=m', undefined, { 'node-name': 'm' }],
    ['file.driver=file,file.filename=x', undefined, { file: { driver: 'file', filename: 'x' } }],
    ['c.1=b,c.0=a,c.2=,,', undefined, { c: ['a', 'b', ','] }],
    ['x.b.d.0=1,x.b.d.1.e=5,x.a=1', undefined, { x: { b: { d: ['1', { e: '5' }] }, a: '1' } }],
    // Both are index 0; QEMU's hash order makes `00` win whatever the order given.
    ['a.0=x,a.00=y', undefined, { a: ['y'] }],
    ['a.00=y,a.0=x', undefined, { a: ['y'] }],
    ['A=x,a_b=x,a-=x', undefined, { A: 'x', a_b: 'x', 'a-': 'x' }],
    // Downstream `__RFQDN_` names keep their dots.
    ['__com.redhat_x=1,__A-1.b_c.d=1', undefined, { '__com.redhat_x': '1', '__A-1.b_c': { d: '1' } }],
    ['a'.repeat(127) + '=1', undefined, { ['a'.repeat(127)]: '1' }],
    // Implied keys: the bare first value, up to the first comma, no escapes.
    ['null-co,node-name=n', 'driver', { driver: 'null-co', 'node-name': 'n' }],
    ['null-co.x,node-name=n', 'driver', { driver: 'null-co.x', 'node-name': 'n' }],
    ['helpme', 'driver', { driver: 'helpme' }],
    ['null-co=x', 'driver', { 'null-co': 'x' }],
    ['driver=null-co', 'driver', { driver: 'null-co' }],
    ['[1]', 'qom-type', { 'qom-type': '[1]' }],
  ];
  for (const [text, implied, expected] of cases) t.deepEqual(parseKeyval(text, implied), expected, text);
});

test('syntax errors in QEMU words', (t) => {
  const cases: [string, string | undefined, string][] = [
    ['driver=null-co,foo', undefined, "Expected '=' after parameter 'foo'"],
    ['foo.bar', undefined, "Expected '=' after parameter 'foo.bar'"],
    ['unix,addr.path=/x', undefined, "Expected '=' after parameter 'unix'"],
    ['a..b=1', undefined, "Invalid parameter 'a..b'"],
    ['.a=1', undefined, "Invalid parameter '.a'"],
    ['a.=1', undefined, "Invalid parameter 'a.'"],
    ['a.x.=1', undefined, "Invalid parameter 'a.x.'"],
    ['=1', undefined, "Invalid parameter ''"],
    [',', undefined, "Invalid parameter ''"],
    ['1=1', undefined, "Invalid parameter '1'"],
    ['a.0x=x', undefined, "Invalid parameter 'a.0x'"],
    ['a.-x=1', undefined, "Invalid parameter 'a.-x'"],
    ['__a=x', undefined, "Invalid parameter '__a'"],
    ['_a=x', undefined, "Invalid parameter '_a'"],
    [',node-name=n', 'driver', "Invalid parameter ''"],
    ['=null-co', 'driver', "Invalid parameter ''"],
    ['null-co,,x=1', 'driver', "Invalid parameter ''"],
    [' {"qom-type":"iothread","id":"x"}', 'qom-type', 'Invalid parameter \'"id":"x"}\''],
    ['a'.repeat(128) + '=1', undefined, `Parameter '${'a'.repeat(128)}' is too long`],
    ['x.' + 'a'.repeat(128) + '=1', undefined, `Parameter fragment '${'a'.repeat(128)}' is too long`],
    ['a'.repeat(128) + '.x=1', undefined, `Parameter fragment '${'a'.repeat(128)}' is too long`],
    ['a.b=1,a=2', undefined, "Parameters 'a.*' used inconsistently"],
    ['a=2,a.b=1', undefined, "Parameters 'a.*' used inconsistently"],
    ['a.b.c=1,a.b=2', undefined, "Parameters 'a.b.*' used inconsistently"],
    ['a.b=1,a.b.c=2', undefined, "Parameters 'a.b.*' used inconsistently"],
    ['a.0=2,a.b=1', undefined, "Parameters 'a.*' used inconsistently"],
    ['a.0.0=1,a.0.x=2', undefined, "Parameters 'a.0.*' used inconsistently"],
    ['a.1=2', undefined, "Parameter 'a.0' missing"],
    ['a.0=2,a.2=1', undefined, "Parameter 'a.1' missing"],
    ['a.0=1,a.5=2', undefined, "Parameter 'a.1' missing"],
    ['a.1=1,a.01=2', undefined, "Parameter 'a.0' missing"],
    ['a.99999999999=1', undefined, "Parameter 'a.0' missing"],
    // QEMU's hash order, not the order given, decides which error comes first.
    ['b.0=1,b.x=1,a.1=1', undefined, "Parameter 'a.0' missing"],
    ['null-co,help', 'driver', 'Help is not available for this option'],
    ['?,x=1', 'driver', 'Help is not available for this option'],
    ['help,x=1', 'driver', 'Help is not available for this option'],
    // A syntax error stops parsing before help is looked at.
    ['null-co,help,x', 'driver', "Expected '=' after parameter 'x'"],
  ];
  for (const [text, implied, expected] of cases) t.is(message(() => parseKeyval(text, implied)), expected, text);
});

test('help requests, for --object', (t) => {
  t.deepEqual(parseKeyvalHelp('help', 'qom-type'), { value: {}, help: true });
  t.deepEqual(parseKeyvalHelp('iothread,id=x,help', 'qom-type'), { value: { 'qom-type': 'iothread', id: 'x' }, help: true });
  t.deepEqual(parseKeyvalHelp('iothread,id=x', 'qom-type'), { value: { 'qom-type': 'iothread', id: 'x' }, help: false });
  t.deepEqual(parseKeyval('help=1'), { help: '1' });
});

/** Schemas shaped like QEMU's for the options the expectations came from. */
function fixtures() {
  const validator = new QapiValidator();
  const injectError = Qapi.struct('BlkdebugInjectErrorOptions', {
    event: Qapi.enum('BlkdebugEvent', ['read_aio', 'write_aio']),
    sector: Qapi.optional(Qapi.int()),
  });
  const branches = [
    Qapi.struct('BlockdevOptionsNullCo', { driver: Qapi.literal('null-co'), ...baseNodeMembers, size: Qapi.optional(Qapi.int()) }),
    Qapi.struct('BlockdevOptionsRaw', { driver: Qapi.literal('raw'), ...baseNodeMembers, file: BlockdevRef }),
    Qapi.struct('BlockdevOptionsQcow2', {
      driver: Qapi.literal('qcow2'),
      ...baseNodeMembers,
      file: BlockdevRef,
      backing: Qapi.optional(BlockdevRefOrNull),
    }),
    Qapi.struct('BlockdevOptionsQuorum', {
      driver: Qapi.literal('quorum'),
      ...baseNodeMembers,
      children: Qapi.list(BlockdevRef),
      'vote-threshold': Qapi.int(),
    }),
    Qapi.struct('BlockdevOptionsBlkdebug', {
      driver: Qapi.literal('blkdebug'),
      ...baseNodeMembers,
      image: BlockdevRef,
      'inject-error': Qapi.optional(Qapi.list(injectError)),
    }),
  ];
  validator.define({ ...Qapi.flatUnion(BLOCKDEV_OPTIONS, 'driver', branches), $id: BLOCKDEV_OPTIONS });
  const blockdev = Qapi.ref(BLOCKDEV_OPTIONS);
  const scalars = Qapi.struct('Scalars', {
    'logical-block-size': Qapi.optional(Qapi.size()),
    'max-connections': Qapi.optional(Qapi.uint32()),
    ratio: Qapi.optional(Qapi.number()),
  });
  const typed = (schema: TSchema, text: string, implied?: string) => typeKeyval(parseKeyval(text, implied), schema, validator);
  return { validator, blockdev, scalars, typed };
}

test('booleans: on/off and the words qapi_bool_parse takes, case-sensitive', (t) => {
  const { blockdev, typed } = fixtures();
  const good: [string, boolean][] = [
    ['on', true], ['yes', true], ['true', true], ['y', true],
    ['off', false], ['no', false], ['false', false], ['n', false],
  ];
  for (const [text, value] of good) {
    t.deepEqual(typed(blockdev, `null-co,read-only=${text},cache.direct=${text}`, 'driver'), {
      driver: 'null-co', 'read-only': value, cache: { direct: value },
    }, text);
  }
  for (const text of ['ON', 'On', '', ' on', 'maybe']) {
    t.is(message(() => typed(blockdev, `null-co,read-only=${text}`, 'driver')), "Parameter 'read-only' expects 'on' or 'off'", text);
  }
  t.is(message(() => typed(blockdev, 'null-co,cache.direct=maybe', 'driver')), "Parameter 'cache.direct' expects 'on' or 'off'");
});

test('integers: strtoll rules (0x hex, 0 octal, sign, leading blanks)', (t) => {
  const { blockdev, typed } = fixtures();
  const good: [string, number][] = [
    ['010', 8], ['0x200', 512], ['0X200', 512], ['01000', 512], ['+12', 12], [' 512', 512], ['-0x10', -16],
    ['-512', -512], ['9223372036854775807', 2 ** 63 - 1], ['-9223372036854775808', -(2 ** 63)],
  ];
  for (const [text, size] of good) t.deepEqual(typed(blockdev, `driver=null-co,size=${text}`), { driver: 'null-co', size }, text);
  const bad = ['0b11', '08', '1k', '', '512 ', '1.0', '1e3', '99999999999999999999', '9223372036854775808', '-9223372036854775809'];
  for (const text of bad) t.is(message(() => typed(blockdev, `driver=null-co,size=${text}`)), "Parameter 'size' expects integer", text);
});

test('unsigned integers: strtoull rules, negatives wrap; the range is the validator\'s', (t) => {
  const { scalars, typed, validator } = fixtures();
  const value = (text: string) => (typed(scalars, `max-connections=${text}`) as Record<string, unknown>)['max-connections'];
  t.is(value('4294967295'), 4294967295);
  t.is(value('-18446744073709551615'), 1);
  t.is(value('-1'), 2 ** 64);
  for (const text of ['x', '18446744073709551616']) {
    t.is(message(() => value(text)), "Parameter 'max-connections' expects integer", text);
  }
  for (const text of ['-1', '4294967296']) {
    const v = typed(scalars, `max-connections=${text}`);
    t.is(message(() => validator.validate(scalars, v)), "Parameter 'max-connections' expects uint32_t", text);
  }
});

test('sizes: qemu_strtosz suffixes and fractions', (t) => {
  const { scalars, typed } = fixtures();
  const size = (text: string) => (typed(scalars, `logical-block-size=${text}`) as Record<string, unknown>)['logical-block-size'];
  const good: [string, number][] = [
    ['4096', 4096], ['4k', 4096], ['4K', 4096], ['512B', 512], ['512b', 512], [' 4k', 4096], ['+4k', 4096],
    ['1M', 2 ** 20], ['1m', 2 ** 20], ['1g', 2 ** 30], ['1G', 2 ** 30], ['1T', 2 ** 40], ['1t', 2 ** 40],
    ['1P', 2 ** 50], ['1E', 2 ** 60], ['0', 0], ['0k', 0],
    // Integral part is decimal, never octal.
    ['010', 10], ['08', 8], ['010k', 10240],
    // Hex, also with a suffix (QEMU 7.2 only warns that it is deprecated).
    ['0x1000', 4096], ['0x1000k', 4096 * 1024],
    // Fractions need a suffix; 64-bit fixed point, rounded half up.
    ['1.5k', 1536], ['1.0k', 1024], ['1.k', 1024], ['0.5k', 512], ['3.3333k', 3413], ['1.0005k', 1025],
    ['1.0004k', 1024], ['0.9990234375k', 1023], ['5.0000001k', 5120], ['1.', 1], ['1.0', 1],
    ['3.99999999999999999999k', 3072],
    // `e` is the exabyte suffix when no exponent digits follow.
    ['2.5e', 2.5 * 2 ** 60], ['15.9E', Number('18331451923248866944')], ['18446744073709551615', 2 ** 64],
  ];
  for (const [text, value] of good) t.is(size(text), value, text);
  const bad = [
    '4KB', '4kb', '4kB', '512bx', '1.5', '1.5B', '0.5', '.5k', '1e3', '1e3k', '0x1.8k', '0x10.5', '00x10', '-1', '-1k',
    '4k ', '16E', '17E', '18446744073709551616', '', 'k', 'inf', 'nan', '1x', '1Z',
  ];
  for (const text of bad) t.is(message(() => size(text)), "Parameter 'logical-block-size' expects size", text);
});

test('numbers: strtod, finite only', (t) => {
  const { scalars, typed } = fixtures();
  const ratio = (text: string) => (typed(scalars, `ratio=${text}`) as Record<string, unknown>).ratio;
  const good: [string, number][] = [['1.5', 1.5], ['1e3', 1000], [' 2', 2], ['-.5', -0.5], ['0x10', 16], ['0x1p3', 8], ['7', 7]];
  for (const [text, value] of good) t.is(ratio(text), value, text);
  for (const text of ['inf', 'nan', '1e999', '1e-999', 'abc', '', '1e', '2 ']) {
    t.is(message(() => ratio(text)), "Invalid parameter type for 'ratio', expected: number", text);
  }
});

test('alternates: an object picks the object branch, a string the string branch', (t) => {
  const { blockdev, typed } = fixtures();
  t.deepEqual(typed(blockdev, 'raw,node-name=r,file=n', 'driver'), { driver: 'raw', 'node-name': 'r', file: 'n' });
  t.deepEqual(typed(blockdev, 'raw,node-name=r,file.driver=null-co,file.size=0x400,file.read-only=on', 'driver'), {
    driver: 'raw', 'node-name': 'r', file: { driver: 'null-co', size: 1024, 'read-only': true },
  });
  // keyval cannot say null: `backing=null` names a node.
  t.deepEqual(typed(blockdev, 'qcow2,file=f,backing=null', 'driver'), { driver: 'qcow2', file: 'f', backing: 'null' });
  t.deepEqual(typed(blockdev, 'quorum,children.0=n,children.1.driver=null-co,children.1.size=1,vote-threshold=1', 'driver'), {
    driver: 'quorum', children: ['n', { driver: 'null-co', size: 1 }], 'vote-threshold': 1,
  });
});

test('typing errors in QEMU words, in QEMU\'s member order', (t) => {
  const { blockdev, typed } = fixtures();
  const cases: [string, string][] = [
    ['driver=null-co,size=1x', "Parameter 'size' expects integer"],
    ['driver=null-co,size.a=1', "Parameters 'size.*' are unexpected"],
    ['driver=null-co,size.0=1', "Parameters 'size.*' are unexpected"],
    ['driver=null-co,cache=x', "Invalid parameter type for 'cache', expected: object"],
    ['driver=null-co,cache.direct.x=on', "Parameters 'cache.direct.*' are unexpected"],
    ['driver.x=null-co', "Parameters 'driver.*' are unexpected"],
    ['node-name=n', "Parameter 'driver' is missing"],
    ['driver=nope', "Parameter 'driver' does not accept value 'nope'"],
    ['driver=', "Parameter 'driver' does not accept value ''"],
    ['driver=null-co,detect-zeroes=bogus', "Parameter 'detect-zeroes' does not accept value 'bogus'"],
    ['driver=raw,node-name=r', "Parameter 'file' is missing"],
    ['driver=raw,file.0=x', "Invalid parameter type for 'file', expected: BlockdevRef"],
    ['driver=raw,file.size=x', "Parameter 'file.driver' is missing"],
    ['driver=raw,file.driver=nope', "Parameter 'driver' does not accept value 'nope'"],
    ['driver=raw,file.driver=null-co,file.size=x', "Parameter 'file.size' expects integer"],
    ['driver=qcow2,file=f,backing.0=x', "Invalid parameter type for 'backing', expected: BlockdevRefOrNull"],
    ['driver=quorum,vote-threshold=1', "Parameter 'children' is missing"],
    ['driver=quorum,children=n,vote-threshold=1', "Invalid parameter type for 'children', expected: array"],
    ['driver=quorum,children.a=n,vote-threshold=1', "Invalid parameter type for 'children', expected: array"],
    ['driver=quorum,children.0=n,vote-threshold=x', "Parameter 'vote-threshold' expects integer"],
    ['driver=quorum,children.0=n,children.1.driver=null-co,children.1.size=x', "Parameter 'children.1.size' expects integer"],
    ['driver=blkdebug,image=i,inject-error.0.event=read_aio,inject-error.0.sector=abc', "Parameter 'inject-error.0.sector' expects integer"],
    ['driver=blkdebug,image=i,inject-error.0.event=read_aio,inject-error.1.event=bogus', "Parameter 'event' does not accept value 'bogus'"],
    ['driver=blkdebug,image=i,inject-error.0.event=read_aio,inject-error.1.sector=1', "Parameter 'inject-error.1.event' is missing"],
    ['driver=blkdebug,image=i,inject-error.0=x', "Invalid parameter type for 'inject-error.0', expected: object"],
    ['driver=blkdebug,image=i,inject-error.0.event=read_aio,inject-error.0.sector.x=1', "Parameters 'inject-error.0.sector.*' are unexpected"],
  ];
  for (const [text, expected] of cases) t.is(message(() => typed(blockdev, text)), expected, text);
});

test('unknown members are left for the validator', (t) => {
  const { blockdev, typed, validator } = fixtures();
  const value = typed(blockdev, 'driver=null-co,size=0x10,a_b=x,c.d=1');
  t.deepEqual(value, { driver: 'null-co', size: 16, a_b: 'x', c: { d: '1' } });
  t.is(message(() => validator.validate(blockdev, value)), "Parameter 'a_b' is unexpected");
});

test('parseJsonOrKeyval: JSON as is when the text starts with {, else typed keyval', (t) => {
  const { blockdev, validator } = fixtures();
  const parse = (text: string) => parseJsonOrKeyval(text, blockdev, validator, 'driver');
  t.deepEqual(parse('null-co,node-name=n,size=1'), { driver: 'null-co', 'node-name': 'n', size: 1 });
  t.deepEqual(parse('{"driver":"null-co","size":"12"}'), { driver: 'null-co', size: '12' });
  t.is(message(() => validator.validate(blockdev, parse('{"driver":"null-co","size":"12"}'))), "Invalid parameter type for 'size', expected: integer");
  t.is(message(() => parse('{')), 'JSON parse error, premature EOI');
  t.is(message(() => parse('{"qom-type":"iothread","id":"x"')), 'JSON parse error, premature EOI');
  t.is(message(() => parse('{"driver":"null-co","node-name":"n"} x')), 'Expecting at most one JSON value');
  t.is(message(() => parse('{"driver":"null-co","node-name":"n"}{}')), 'Expecting at most one JSON value');
  t.is(message(() => parse('help')), 'Help is not available for this option');
});
