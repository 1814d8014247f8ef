/**
 * Text the way qemu-img 7.2 prints it: JSON objects in QDict order, sizes
 * as size_to_str() words them, and printf's `%#x`.
 *
 * qemu-img builds its JSON output (info, check) as a QDict and prints it
 * with qobject_to_json_pretty(), so members come out in the hash table's
 * order: bucket `tdb_hash(key) % 512` ascending, and within a bucket the
 * member added last first (QLIST_INSERT_HEAD). Objects given here in QAPI
 * member order (the order QEMU's visitor adds them) therefore print with
 * exactly QEMU's key order.
 */
import { formatQemuJson } from '../util/qemu-json.js';

const QDICT_BUCKETS = 512;

/** qobject/qdict.c's tdb_hash() over the key's bytes (keys are ASCII QAPI names). */
function tdbHash(key: string): number {
  const bytes = Buffer.from(key, 'utf8');
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) value = (value + (bytes[i]! << ((i * 5) % 24))) >>> 0;
  return (Math.imul(1103515243, value) + 12345) >>> 0;
}

/** A copy of `value` whose objects (at any depth) have their members in QDict iteration order. */
export function qdictOrdered(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(qdictOrdered);
  if (value === null || typeof value !== 'object') return value;
  const buckets = new Map<number, [string, unknown][]>();
  for (const [key, member] of Object.entries(value)) {
    if (member === undefined) continue;
    const bucket = tdbHash(key) % QDICT_BUCKETS;
    const list = buckets.get(bucket) ?? [];
    list.unshift([key, qdictOrdered(member)]);
    buckets.set(bucket, list);
  }
  const ordered: Record<string, unknown> = {};
  for (const bucket of [...buckets.keys()].sort((a, b) => a - b)) {
    for (const [key, member] of buckets.get(bucket)!) ordered[key] = member;
  }
  return ordered;
}

/** qobject_to_json_pretty() of a QAPI object, as `qemu-img … --output=json` prints it (plus the newline). */
export function qemuJsonPretty(value: unknown): string {
  return `${formatQemuJson(qdictOrdered(value), { pretty: true })}\n`;
}

/** C's `%0.3g`. */
function formatG3(x: number): string {
  if (x === 0) return '0';
  const text = x.toPrecision(3);
  const exponential = /^(-?[\d.]+)e([+-])(\d+)$/.exec(text);
  if (exponential !== null) {
    const mantissa = exponential[1]!.includes('.') ? exponential[1]!.replace(/\.?0+$/, '') : exponential[1]!;
    return `${mantissa}e${exponential[2]}${exponential[3]!.padStart(2, '0')}`;
  }
  return text.includes('.') ? text.replace(/\.?0+$/, '') : text;
}

const SIZE_SUFFIXES = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];

/** QEMU's size_to_str(): `64 MiB`, `196 KiB`, `1.5 GiB`, `0 B`; the unit changes once the number reaches 1000. */
export function sizeToStr(bytes: number): string {
  const scaled = bytes / (1000 / 1024);
  // frexp()'s exponent: scaled = m * 2^e with m in [0.5, 1).
  const exponent = scaled === 0 ? 0 : Math.floor(Math.log2(scaled)) + 1;
  const unit = Math.min(SIZE_SUFFIXES.length - 1, Math.max(0, Math.trunc((exponent - 1) / 10)));
  return `${formatG3(bytes / 2 ** (unit * 10))} ${SIZE_SUFFIXES[unit]}B`;
}

/** printf's `%#x`: `0x100000`, but `0` for zero. */
export function hexAlt(n: number): string {
  return n === 0 ? '0' : `0x${n.toString(16)}`;
}
