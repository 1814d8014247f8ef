/**
 * QEMU's KEY=VALUE,... option syntax (util/keyval.c), as qemu-storage-daemon
 * parses `--blockdev`, `--export`, `--monitor`, `--nbd-server` and
 * `--object`: the result is a tree of objects and lists whose leaves are
 * strings; keyval-typing.ts converts the leaves to what a schema expects.
 *
 * - `key=value` pairs separated by `,`; `,,` in a value is a literal comma;
 *   a trailing `,` is allowed.
 * - Dotted keys nest: `file.driver=file` → `{file: {driver: 'file'}}`.
 *   A key fragment is a QAPI name (`[A-Za-z][A-Za-z0-9_-]*`, optionally
 *   behind a `__RFQDN_` prefix) or, after the first, a decimal index.
 * - Objects whose keys are all indexes become lists; indexes must be
 *   contiguous from 0 (in any order).
 * - The same key twice: the later value wins.
 * - With an implied key, a first parameter without `=` is that key's value
 *   (no `,,` escaping there).
 * - A bare `help` or `?` parameter is a help request.
 */
import { BlockLayerError } from '../errors.js';

/**
 * The implied keys of qemu-storage-daemon 7.2's options. `--nbd-server` has
 * none. `--chardev` is parsed by QemuOpts in QEMU, not keyval: see
 * CHARDEV_IMPLIED_KEY.
 */
export const BLOCKDEV_IMPLIED_KEY = 'driver';
export const EXPORT_IMPLIED_KEY = 'type';
export const MONITOR_IMPLIED_KEY = 'chardev';
export const OBJECT_IMPLIED_KEY = 'qom-type';
/**
 * `--chardev socket,path=…`: QEMU parses it with QemuOpts, which also takes
 * flags (`server`, `nowait`) and `,,` in the implied value; keyval is the
 * strict subset of that syntax.
 */
export const CHARDEV_IMPLIED_KEY = 'backend';

/** Key fragments are at most this long (QEMU's buffer is 128 with the NUL). */
const MAX_FRAGMENT = 127;
const INT_MAX = 2 ** 31 - 1;

type Tree = string | Dict | Tree[];
type Dict = Map<string, Tree>;

export interface KeyvalParseResult {
  value: Record<string, unknown>;
  /** A bare `help` or `?` was among the parameters. */
  help: boolean;
}

/** Parses `text`; for options that offer help (`--object`), reports a help request instead of failing. */
export function parseKeyvalHelp(text: string, impliedKey?: string): KeyvalParseResult {
  const { root, help } = parseParameters(text, impliedKey);
  return { value: toObject(root), help };
}

/** Parses `text` as qemu-storage-daemon does for options without help. */
export function parseKeyval(text: string, impliedKey?: string): Record<string, unknown> {
  const { root, help } = parseParameters(text, impliedKey);
  if (help) throw new BlockLayerError('Help is not available for this option');
  return toObject(root);
}

function parseParameters(text: string, impliedKey: string | undefined): { root: Dict; help: boolean } {
  const root: Dict = new Map();
  const state = { help: false };
  let pos = 0;
  let implied = impliedKey;
  while (pos < text.length) {
    pos = parseOne(root, text, pos, implied, state);
    implied = undefined;
  }
  return { root, help: state.help };
}

/** Builds the lists (after the help check, as QEMU orders its errors) and converts to plain values. */
function toObject(root: Dict): Record<string, unknown> {
  listify(root, '');
  return toPlain(root) as Record<string, unknown>;
}

function isDigit(c: string | undefined): boolean {
  return c !== undefined && c >= '0' && c <= '9';
}

function isAlpha(c: string | undefined): boolean {
  return c !== undefined && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
}

function isAlnum(c: string | undefined): boolean {
  return isAlpha(c) || isDigit(c);
}

/** Length of the QAPI name at `key[start]` (QEMU's parse_qapi_name), or 0. */
function qapiNameLength(key: string, start: number): number {
  let p = start;
  if (key[p] === '_') {
    // Downstream extension prefix `__RFQDN_`; its dots belong to the name.
    if (key[++p] !== '_') return 0;
    while (isAlnum(key[++p]) || key[p] === '-' || key[p] === '.');
    if (key[p] !== '_') return 0;
    p++;
  }
  if (!isAlpha(key[p])) return 0;
  while (isAlnum(key[++p]) || key[p] === '-' || key[p] === '_');
  return p - start;
}

/** Length of the decimal index at `key[start]`, or 0. */
function indexLength(key: string, start: number): number {
  let p = start;
  while (isDigit(key[p])) p++;
  return p - start;
}

/** A list index when `key` is all digits, capped at INT_MAX as QEMU does; else -1. */
function keyToIndex(key: string): number {
  if (key === '' || indexLength(key, 0) !== key.length) return -1;
  return Math.min(Number(key), INT_MAX);
}

/** Parses one parameter starting at `start`; returns where the next one starts. */
function parseOne(root: Dict, text: string, start: number, impliedKey: string | undefined, state: { help: boolean }) {
  let end = start;
  while (end < text.length && text[end] !== '=' && text[end] !== ',') end++;
  let key = text.slice(start, end);
  let impliedValue: string | undefined;
  if (key !== '' && text[end] !== '=') {
    if (key === 'help' || key === '?') {
      state.help = true;
      return text[end] === ',' ? end + 1 : end;
    }
    if (impliedKey !== undefined) {
      impliedValue = key;
      key = impliedKey;
    }
  }

  let cur = root;
  let fragment = '';
  let s = 0;
  for (;;) {
    const len = (s > 0 ? indexLength(key, s) : 0) || qapiNameLength(key, s);
    if (len === 0 || (s + len < key.length && key[s + len] !== '.')) {
      throw new BlockLayerError(`Invalid parameter '${key}'`);
    }
    if (len > MAX_FRAGMENT) {
      const what = s > 0 || s + len !== key.length ? 'Parameter fragment' : 'Parameter';
      throw new BlockLayerError(`${what} '${key.slice(s, s + len)}' is too long`);
    }
    if (s > 0) cur = put(cur, fragment, undefined, key.slice(0, s - 1)) as Dict;
    fragment = key.slice(s, s + len);
    s += len;
    if (key[s] !== '.') break;
    s++;
  }

  if (impliedValue !== undefined) {
    put(cur, fragment, impliedValue, key);
    return text[end] === ',' ? end + 1 : end;
  }
  if (text[end] !== '=') throw new BlockLayerError(`Expected '=' after parameter '${key}'`);
  let value = '';
  let p = end + 1;
  while (p < text.length) {
    if (text[p] === ',') {
      if (text[p + 1] !== ',') {
        p++;
        break;
      }
      p++;
    }
    value += text[p++];
  }
  put(cur, fragment, value, key);
  return p;
}

/**
 * Makes `cur[name]` an object (value undefined) or the string `value`; a
 * member used both ways is an error, worded with the key up to `errorKey`.
 */
function put(cur: Dict, name: string, value: string | undefined, errorKey: string): Tree {
  const old = cur.get(name);
  if (old !== undefined) {
    if ((typeof old === 'string') !== (value !== undefined)) {
      throw new BlockLayerError(`Parameters '${errorKey}.*' used inconsistently`);
    }
    if (value === undefined) return old;
  }
  const next = value ?? new Map<string, Tree>();
  cur.set(name, next);
  return next;
}

/** QEMU's QDict bucket for a key: tdb_hash(key) % 512. */
function qdictBucket(key: string): number {
  let value = Math.imul(0x238f13af, key.length) >>> 0;
  for (let i = 0; i < key.length; i++) value = (value + (key.charCodeAt(i) << ((i * 5) % 24))) >>> 0;
  return ((Math.imul(1103515243, value) + 12345) >>> 0) % 512;
}

/**
 * A dict's entries in QDict iteration order (by bucket, newest first within
 * one). It decides which of several list errors QEMU reports, and which of
 * `a.0` and `a.00` wins (`00`, whatever the order given).
 */
function qdictOrder(dict: Dict): [string, Tree][] {
  return [...dict.entries()]
    .map((entry, inserted) => ({ entry, inserted, bucket: qdictBucket(entry[0]) }))
    .sort((x, y) => x.bucket - y.bucket || y.inserted - x.inserted)
    .map((x) => x.entry);
}

/** Replaces, depth first, objects whose keys are all indexes by lists (QEMU's keyval_listify). */
function listify(cur: Dict, prefix: string): Tree {
  let hasIndex = false;
  let hasMember = false;
  for (const [key, value] of qdictOrder(cur)) {
    if (keyToIndex(key) >= 0) hasIndex = true;
    else hasMember = true;
    if (value instanceof Map) cur.set(key, listify(value, `${prefix}${key}.`));
  }
  if (hasIndex && hasMember) throw new BlockLayerError(`Parameters '${prefix}*' used inconsistently`);
  if (!hasIndex) return cur;

  // One slot more than there are keys: an index past them shows up as a gap.
  const slots = cur.size + 1;
  const elements: (Tree | undefined)[] = new Array<Tree | undefined>(slots);
  let maxIndex = -1;
  for (const [key, value] of qdictOrder(cur)) {
    const index = keyToIndex(key);
    maxIndex = Math.max(maxIndex, index);
    if (index < slots - 1) elements[index] = value;
  }
  const list: Tree[] = [];
  for (let i = 0; i < Math.min(slots, maxIndex + 1); i++) {
    const element = elements[i];
    if (element === undefined) throw new BlockLayerError(`Parameter '${prefix}${i}' missing`);
    list.push(element);
  }
  return list;
}

function toPlain(tree: Tree): unknown {
  if (typeof tree === 'string') return tree;
  if (Array.isArray(tree)) return tree.map(toPlain);
  const out: Record<string, unknown> = {};
  for (const [key, value] of tree) out[key] = toPlain(value);
  return out;
}
