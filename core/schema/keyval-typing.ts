/**
 * Types the string leaves of a keyval tree (keyval-parse.ts) the way QEMU's
 * keyval input visitor does (qobject_input_visitor_new_keyval): walking the
 * schema in member order, it converts each string to what the member
 * expects and reports, as QEMU would at that point, a missing member, a
 * value of the wrong shape, a bad enum value or a conversion failure.
 * Unknown members and numeric ranges are left to the validator, which runs
 * afterwards. Paths are named the keyval way: `inject-error.0.sector`.
 */
import { type TSchema, TypeGuard } from '@sinclair/typebox';
import { BlockLayerError } from '../errors.js';
import { annotations, isRef } from './qapi.js';
import type { QapiValidator } from './qapi-validator.js';

class KeyvalPath {
  constructor(private readonly parts: readonly (string | number)[] = []) {}

  member(name: string): KeyvalPath {
    return new KeyvalPath([...this.parts, name]);
  }

  element(index: number): KeyvalPath {
    return new KeyvalPath([...this.parts, index]);
  }

  /** QEMU's full_name() in keyval mode: list indexes are dotted too. */
  get full(): string {
    return this.parts.length === 0 ? '<anonymous>' : this.parts.join('.');
  }

  /** The bare member name QEMU's enum errors use ('null' for list elements). */
  get bare(): string {
    const last = this.parts[this.parts.length - 1];
    return typeof last === 'string' ? last : 'null';
  }
}

type Shape = 'object' | 'array' | 'string';

function shapeOf(value: unknown): Shape | undefined {
  if (typeof value === 'string') return 'string';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'object' && value !== null) return 'object';
  return undefined;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return shapeOf(value) === 'object';
}

function fail(message: string): never {
  throw new BlockLayerError(message);
}

function typeError(path: KeyvalPath, expected: string): never {
  fail(`Invalid parameter type for '${path.full}', expected: ${expected}`);
}

/**
 * Whose words a bad number is reported in: the keyval input visitor's
 * (-blockdev, QMP-style options), or QemuOpts' (qemu-img's -o).
 */
export type KeyvalWording = 'keyval' | 'qemu-opts';

/**
 * Converts the string leaves of `value` to what `schema` expects, as QEMU's
 * keyval input visitor does. Throws its first error in QEMU's words.
 */
export function typeKeyval(value: unknown, schema: TSchema, validator: QapiValidator, wording: KeyvalWording = 'keyval'): unknown {
  return new KeyvalTyper(validator, wording).visit(schema, value, new KeyvalPath());
}

class KeyvalTyper {
  constructor(
    private readonly validator: QapiValidator,
    private readonly wording: KeyvalWording,
  ) {}

  private deref(schema: TSchema): TSchema {
    if (!isRef(schema)) return schema;
    const target = this.validator.lookup(schema.$ref);
    if (target === undefined) throw new Error(`QAPI type '${schema.$ref}' is not defined`);
    return target;
  }

  visit(schema: TSchema, value: unknown, path: KeyvalPath): unknown {
    const s = this.deref(schema);
    if (TypeGuard.IsUnion(s)) {
      const a = annotations(s);
      if (a.qapiEnum) return this.enumValue(s.anyOf, value, path);
      if (a.discriminator !== undefined) return this.flatUnion(s.anyOf, a.discriminator, value, path);
      return this.alternate(s.anyOf, a.qapiType, value, path);
    }
    if (TypeGuard.IsObject(s)) return this.struct(s, value, path);
    if (TypeGuard.IsArray(s)) {
      if (!Array.isArray(value)) typeError(path, 'array');
      return value.map((item, i) => this.visit(s.items, item, path.element(i)));
    }
    // 'any' takes the tree as is; keyval cannot say null, the validator reports that.
    if (TypeGuard.IsUnknown(s) || TypeGuard.IsAny(s) || TypeGuard.IsNull(s)) return value;
    const text = scalarText(value, path);
    if (text === undefined) return value;
    if (TypeGuard.IsBoolean(s)) return parseBool(text, path);
    if (TypeGuard.IsInteger(s)) return parseInteger(text, annotations(s).qapiType, path, this.wording);
    if (TypeGuard.IsNumber(s)) return parseNumber(text) ?? typeError(path, 'number');
    return text;
  }

  private struct(s: TSchema & { properties: Record<string, TSchema> }, value: unknown, path: KeyvalPath) {
    if (!isPlainObject(value)) typeError(path, 'object');
    const required = new Set((s as { required?: string[] }).required ?? []);
    const out: Record<string, unknown> = { ...value };
    for (const [key, member] of Object.entries(s.properties)) {
      if (!Object.hasOwn(value, key)) {
        if (required.has(key)) fail(`Parameter '${path.member(key).full}' is missing`);
        continue;
      }
      out[key] = this.visit(member, value[key], path.member(key));
    }
    return out;
  }

  private enumValue(literals: TSchema[], value: unknown, path: KeyvalPath): unknown {
    const text = scalarText(value, path);
    if (text !== undefined && !literals.some((l) => (l as { const?: unknown }).const === text)) {
      fail(`Parameter '${path.bare}' does not accept value '${text}'`);
    }
    return value;
  }

  /** The tag picks the branch; it comes first in the base of every union qemu-storage-daemon parses. */
  private flatUnion(branches: TSchema[], tag: string, value: unknown, path: KeyvalPath): unknown {
    if (!isPlainObject(value)) typeError(path, 'object');
    if (!Object.hasOwn(value, tag)) fail(`Parameter '${path.member(tag).full}' is missing`);
    const tagValue = scalarText(value[tag], path.member(tag));
    if (tagValue === undefined) return value;
    const branch = branches
      .map((b) => this.deref(b))
      .find((b) => (b as { properties?: Record<string, { const?: unknown }> }).properties?.[tag]?.const === tagValue);
    if (branch === undefined || !TypeGuard.IsObject(branch)) fail(`Parameter '${tag}' does not accept value '${tagValue}'`);
    return this.struct(branch, value, path);
  }

  /**
   * Keyval values are objects, lists or strings, so those pick the branch;
   * as in QEMU, a number or boolean branch is never taken (QAPI forbids
   * them next to a string branch).
   */
  private alternate(branches: TSchema[], name: string | undefined, value: unknown, path: KeyvalPath): unknown {
    const shape = shapeOf(value);
    if (shape === undefined) return value;
    const branch = branches.find((b) => this.branchShape(b) === shape);
    if (branch === undefined) typeError(path, name ?? 'alternate');
    return this.visit(branch, value, path);
  }

  private branchShape(schema: TSchema): Shape | undefined {
    const s = this.deref(schema);
    if (TypeGuard.IsUnion(s)) {
      const a = annotations(s);
      if (a.qapiEnum) return 'string';
      return a.discriminator !== undefined ? 'object' : undefined;
    }
    if (TypeGuard.IsObject(s)) return 'object';
    if (TypeGuard.IsArray(s)) return 'array';
    if (TypeGuard.IsString(s) || (TypeGuard.IsLiteral(s) && typeof s.const === 'string')) return 'string';
    return undefined;
  }
}

/** The string a scalar member holds; an object or list there is QEMU's "Parameters 'x.*' are unexpected". */
function scalarText(value: unknown, path: KeyvalPath): string | undefined {
  const shape = shapeOf(value);
  if (shape === 'object' || shape === 'array') fail(`Parameters '${path.full}.*' are unexpected`);
  return shape === 'string' ? (value as string) : undefined;
}

const TRUE_WORDS = new Set(['on', 'yes', 'true', 'y']);
const FALSE_WORDS = new Set(['off', 'no', 'false', 'n']);

/** QEMU 7.2's qapi_bool_parse(): case-sensitive. */
function parseBool(text: string, path: KeyvalPath): boolean {
  if (TRUE_WORDS.has(text)) return true;
  if (FALSE_WORDS.has(text)) return false;
  fail(`Parameter '${path.full}' expects 'on' or 'off'`);
}

/** QemuOpts' report of a size option that is not one (parse_option_size). */
export function qemuOptsSizeError(name: string): string {
  return (
    `Parameter '${name}' expects a non-negative number below 2^64\n` +
    'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.'
  );
}

function parseInteger(text: string, qapiType: string | undefined, path: KeyvalPath, wording: KeyvalWording): number {
  if (qapiType === 'size') {
    const size = qemuStrtosz(text);
    if (typeof size === 'bigint') return Number(size);
    fail(wording === 'keyval' ? `Parameter '${path.full}' expects size` : qemuOptsSizeError(path.full));
  }
  const value = qapiType?.startsWith('uint') ? strtou64(text) : strtoi64(text);
  if (value === undefined) fail(`Parameter '${path.full}' ${wording === 'keyval' ? 'expects integer' : 'expects a number'}`);
  return Number(value);
}

const TWO_63 = 2n ** 63n;
const TWO_64 = 2n ** 64n;
const MASK64 = TWO_64 - 1n;
const DBL_MIN = 2.2250738585072014e-308;

/** How many leading characters C's isspace() skips. */
function leadingSpace(text: string): number {
  return /^[ \t\n\v\f\r]*/.exec(text)?.[0].length ?? 0;
}

interface ScannedInteger {
  negative: boolean;
  magnitude: bigint;
  /** Index of the first character not converted. */
  end: number;
}

/** The syntax of C's strtoull()/strtoll() in the C locale; undefined when nothing converts. */
function scanInteger(text: string, base: 0 | 10 | 16): ScannedInteger | undefined {
  let i = leadingSpace(text);
  const negative = text[i] === '-';
  if (negative || text[i] === '+') i++;
  let radix: number = base;
  if (base !== 10 && text[i] === '0' && (text[i + 1] === 'x' || text[i + 1] === 'X') && isDigitIn(text[i + 2], 16)) {
    radix = 16;
    i += 2;
  } else if (base === 0) {
    radix = text[i] === '0' ? 8 : 10;
  }
  const start = i;
  let magnitude = 0n;
  while (isDigitIn(text[i], radix)) magnitude = magnitude * BigInt(radix) + BigInt(parseInt(text[i++] ?? '', radix));
  return i === start ? undefined : { negative, magnitude, end: i };
}

function isDigitIn(c: string | undefined, radix: number): boolean {
  return c !== undefined && c !== '' && !Number.isNaN(parseInt(c, radix));
}

/** qemu_strtoi64(text, NULL, 0): decimal, 0x hex or 0 octal, the whole text, no overflow. */
function strtoi64(text: string): bigint | undefined {
  const n = scanInteger(text, 0);
  if (n === undefined || n.end !== text.length) return undefined;
  if (n.magnitude > (n.negative ? TWO_63 : TWO_63 - 1n)) return undefined;
  return n.negative ? -n.magnitude : n.magnitude;
}

/** qemu_strtou64(text, NULL, 0): as strtoull, a negative number wraps (`-1` is 2^64-1). */
function strtou64(text: string): bigint | undefined {
  const n = scanInteger(text, 0);
  if (n === undefined || n.end !== text.length || n.magnitude > MASK64) return undefined;
  return n.negative ? (TWO_64 - n.magnitude) & MASK64 : n.magnitude;
}

const SUFFIX_POWER: Record<string, bigint> = { B: 0n, K: 1n, M: 2n, G: 3n, T: 4n, P: 5n, E: 6n };

/** The multiplier a size suffix stands for (either case), or undefined. */
function suffixMultiplier(c: string | undefined): bigint | undefined {
  const power = c === undefined ? undefined : SUFFIX_POWER[c.toUpperCase()];
  return power === undefined ? undefined : 1024n ** power;
}

/**
 * QEMU 7.2's qemu_strtosz(): a decimal integer (never octal), or 0x hex;
 * then an optional decimal fraction, which needs a suffix other than B;
 * then an optional suffix B/K/M/G/T/P/E in either case, powers of 1024. The
 * fraction is kept as 64-bit fixed point and the product rounded half up,
 * so `1.5k` is 1536 and `1.0005k` is 1025. Hex with a suffix (`0x10k`) is
 * accepted: QEMU only warns that it is deprecated. Its errors: EINVAL
 * (not a size, a negative number included) and ERANGE (2^64 or more), which
 * qemu-img's cvtnum() words differently.
 */
export function qemuStrtosz(text: string): bigint | 'EINVAL' | 'ERANGE' {
  const n = scanInteger(text, 10);
  if (n === undefined || n.negative) return 'EINVAL';
  if (n.magnitude > MASK64) return 'ERANGE';
  let { end, magnitude: value } = n;
  let fraction = 0n;
  if (value === 0n && (text[end] === 'x' || text[end] === 'X')) {
    const hex = scanInteger(text, 16);
    if (hex === undefined || text[hex.end] === '.') return 'EINVAL';
    if (hex.magnitude > MASK64) return 'ERANGE';
    ({ end, magnitude: value } = hex);
  } else if (text[end] === '.') {
    const digits = /^\.(\d+)/.exec(text.slice(end))?.[1];
    if (digits === undefined) {
      end++; // strtod converts nothing: QEMU skips the '.' alone (`1.k` is 1k)
    } else {
      end += 1 + digits.length;
      // An exponent is strtod's only if digits follow; then QEMU refuses the input.
      if (/^[eE][+-]?\d/.test(text.slice(end))) return 'EINVAL';
      // C's out-of-range conversion of 1.0 * 2^64 gives 0 on x86-64: `3.99999999999999999999k` is 3072.
      fraction = BigInt(Math.trunc(Number(`0.${digits}`) * 2 ** 64)) & MASK64;
    }
  }
  let multiplier = suffixMultiplier(text[end]);
  if (multiplier === undefined) multiplier = 1n;
  else end++;
  if (multiplier === 1n) {
    if (fraction !== 0n) return 'EINVAL';
  } else {
    const scaled = fraction * multiplier;
    value = value * multiplier + (scaled >> 64n) + (((scaled & MASK64) >> 63n) & 1n);
    if (value > MASK64) return 'ERANGE';
  }
  return end === text.length ? value : 'EINVAL';
}

const DECIMAL_FLOAT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const HEX_FLOAT = /^([+-]?)0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP]([+-]?\d+))?$/;

/**
 * qemu_strtod_finite(text, NULL): strtod's decimal or hex floats over the
 * whole text; infinities, NaN, overflow and underflow are refused.
 */
function parseNumber(text: string): number | undefined {
  const body = text.slice(leadingSpace(text));
  let value: number;
  let nonzero: boolean;
  const hex = HEX_FLOAT.exec(body);
  if (hex !== null) {
    const [, sign = '', digits = '', exponent = '0'] = hex;
    const [whole = '', frac = ''] = digits.split('.');
    const mantissa = BigInt(`0x0${whole}${frac}`);
    nonzero = mantissa !== 0n;
    value = nonzero ? Number(mantissa) * 2 ** (Number(exponent) - 4 * frac.length) : 0;
    if (sign === '-') value = -value;
  } else if (DECIMAL_FLOAT.test(body)) {
    nonzero = /[1-9]/.test(body.replace(/[eE].*$/, ''));
    value = Number(body);
  } else {
    return undefined;
  }
  if (!Number.isFinite(value) || (nonzero && Math.abs(value) < DBL_MIN)) return undefined;
  return value;
}
