/**
 * JSON text exactly as QEMU 7.2 writes it on QMP (qobject/qjson.c, compact
 * form): `{"a": 1, "b": [1, 2]}`, pure ASCII, no trailing newline.
 *
 * Strings: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`; every other character
 * below 0x20 or from 0x7F up as `\uXXXX` with upper-case hex (surrogate pairs
 * beyond the BMP); `/` is not escaped. Characters QEMU's modified UTF-8
 * rejects (lone surrogates, noncharacters) become `\uFFFD`, as QEMU shows any
 * invalid sequence.
 *
 * Numbers: QEMU prints int64/uint64 values as integers and doubles with
 * "%.17g". A JS number does not say which it was, so integral values in the
 * int64..uint64 range print as integers, others as "%.17g" (including
 * glibc's `inf`, `-inf` and `nan`, which QEMU emits as they are). A bigint
 * prints as an integer.
 *
 * Objects keep insertion order (QEMU's own order is its hash table's);
 * members whose value is `undefined` are left out.
 *
 * With `pretty` (a monitor's `pretty=on`), containers open a line, members
 * are indented four spaces a level, and an empty container closes on its own
 * line too, as QEMU prints them (`{\n    }`). Lines end in `\n`; the
 * transport makes them CRLF.
 */
import { isValidCodePoint } from './mod-utf8.js';

export function formatQemuJson(value: unknown, options: { pretty?: boolean } = {}): string {
  return write(value, new Set(), options.pretty ? 0 : undefined);
}

/** `ancestors` holds the containers being written, to reject cycles; `level` is set when pretty-printing. */
function write(value: unknown, ancestors: Set<object>, level?: number): string {
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      return formatNumber(value);
    case 'bigint':
      return value.toString();
    case 'string':
      return quote(value);
    case 'object':
      if (value === null) return 'null';
      if (ancestors.has(value)) throw new TypeError('formatQemuJson: cyclic value');
      ancestors.add(value);
      try {
        return Array.isArray(value) ? writeArray(value, ancestors, level) : writeObject(value, ancestors, level);
      } finally {
        ancestors.delete(value);
      }
    default:
      throw new TypeError(`formatQemuJson: cannot represent ${typeof value}`);
  }
}

function writeArray(array: readonly unknown[], ancestors: Set<object>, level?: number): string {
  const inner = level === undefined ? undefined : level + 1;
  return container('[', ']', array.map((element) => write(element, ancestors, inner)), level);
}

function writeObject(object: object, ancestors: Set<object>, level?: number): string {
  const inner = level === undefined ? undefined : level + 1;
  const members: string[] = [];
  for (const [key, member] of Object.entries(object)) {
    if (member !== undefined) members.push(`${quote(key)}: ${write(member, ancestors, inner)}`);
  }
  return container('{', '}', members, level);
}

function container(open: string, close: string, items: string[], level?: number): string {
  if (level === undefined) return `${open}${items.join(', ')}${close}`;
  const indent = '    '.repeat(level + 1);
  const body = items.map((item) => `\n${indent}${item}`).join(',');
  return `${open}${body}\n${'    '.repeat(level)}${close}`;
}

// Everything except printable ASCII other than '"' and '\'; with "u", one match per code point.
const NEEDS_ESCAPE = /[^\x20\x21\x23-\x5b\x5d-\x7e]/gu;

const SHORT_ESCAPES = new Map<string, string>([
  ['"', '\\"'],
  ['\\', '\\\\'],
  ['\b', '\\b'],
  ['\f', '\\f'],
  ['\n', '\\n'],
  ['\r', '\\r'],
  ['\t', '\\t'],
]);

function quote(text: string): string {
  return `"${text.replace(NEEDS_ESCAPE, escapeCharacter)}"`;
}

function escapeCharacter(character: string): string {
  const short = SHORT_ESCAPES.get(character);
  if (short !== undefined) return short;
  const codePoint = character.codePointAt(0) ?? 0xfffd;
  if (!isValidCodePoint(codePoint)) return '\\uFFFD';
  if (codePoint <= 0xffff) return unicodeEscape(codePoint);
  const offset = codePoint - 0x10000;
  return unicodeEscape(0xd800 + Math.floor(offset / 0x400)) + unicodeEscape(0xdc00 + (offset % 0x400));
}

function unicodeEscape(unit: number): string {
  return `\\u${unit.toString(16).toUpperCase().padStart(4, '0')}`;
}

const INT64_MIN = -(2 ** 63);
const UINT64_END = 2 ** 64;

function formatNumber(n: number): string {
  if (Number.isNaN(n)) return 'nan';
  if (!Number.isFinite(n)) return n > 0 ? 'inf' : '-inf';
  if (Number.isInteger(n) && !Object.is(n, -0) && n >= INT64_MIN && n < UINT64_END) return BigInt(n).toString();
  return formatG17(n);
}

/**
 * C's "%.17g" with glibc's exact, round-half-even conversion (JS's
 * toPrecision rounds exact ties up, so the digits are computed here).
 */
function formatG17(n: number): string {
  const sign = n < 0 || Object.is(n, -0) ? '-' : '';
  if (n === 0) return `${sign}0`;
  const { digits, exponent } = roundedDigits(Math.abs(n), 17);
  const significant = digits.replace(/0+$/, '');
  if (exponent < -4 || exponent >= 17) {
    const fraction = significant.length > 1 ? `.${significant.slice(1)}` : '';
    const exponentText = String(Math.abs(exponent)).padStart(2, '0');
    return `${sign}${significant.slice(0, 1)}${fraction}e${exponent < 0 ? '-' : '+'}${exponentText}`;
  }
  if (exponent < 0) return `${sign}0.${'0'.repeat(-exponent - 1)}${significant}`;
  const whole = significant.slice(0, exponent + 1).padEnd(exponent + 1, '0');
  const fraction = significant.slice(exponent + 1);
  return `${sign}${whole}${fraction === '' ? '' : `.${fraction}`}`;
}

/**
 * The first `precision` significant decimal digits of positive finite `x`,
 * rounded half-to-even from its exact binary value, and the decimal exponent
 * of the first digit.
 */
function roundedDigits(x: number, precision: number): { digits: string; exponent: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const biasedExponent = Number((bits >> 52n) & 0x7ffn);
  const fractionBits = bits & ((1n << 52n) - 1n);
  const mantissa = biasedExponent === 0 ? fractionBits : fractionBits | (1n << 52n);
  const binaryExponent = (biasedExponent === 0 ? 1 : biasedExponent) - 1075;
  // x = mantissa * 2^binaryExponent = exact / 10^scale, with `exact` an integer.
  const scale = Math.max(0, -binaryExponent);
  const exact = binaryExponent >= 0 ? mantissa << BigInt(binaryExponent) : mantissa * 5n ** BigInt(scale);
  const all = exact.toString();
  let exponent = all.length - 1 - scale;
  if (all.length <= precision) return { digits: all.padEnd(precision, '0'), exponent };
  let kept = BigInt(all.slice(0, precision));
  const rest = all.slice(precision);
  const half = `5${'0'.repeat(rest.length - 1)}`;
  if (rest > half || (rest === half && kept % 2n === 1n)) kept += 1n;
  let digits = kept.toString();
  if (digits.length > precision) {
    digits = digits.slice(0, precision);
    exponent++;
  }
  return { digits, exponent };
}
