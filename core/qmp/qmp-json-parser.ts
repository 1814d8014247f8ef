/**
 * Turns the tokens of one QMP message into a value, reporting the same first
 * error as QEMU 7.2's recursive-descent parser (qobject/json-parser.c).
 *
 * It works token by token with an explicit stack, so deeply nested input
 * cannot exhaust the JS call stack; once an error is found the remaining
 * tokens of the message are ignored, as QEMU stops at its first error.
 */
import { JsonTokenKind } from './qmp-json-lexer.js';
import { decodeModUtf8, decodeModUtf8Lossy, isValidCodePoint } from '../util/mod-utf8.js';

export type QmpJsonParseResult = { ok: true; value: unknown } | { ok: false; error: string };

type JsonObject = Record<string, unknown>;

/**
 * Containers being built. `state` says what comes next: after `[` (open) an
 * element or `]`, after `,` (element) an element, after an element
 * (separator) `,` or `]`; for objects likewise, with a key, then `:` (colon),
 * then the member's value (value).
 */
type Frame =
  | { kind: 'array'; value: unknown[]; state: 'open' | 'element' | 'separator' }
  | { kind: 'object'; value: JsonObject; state: 'open' | 'key' | 'colon' | 'value' | 'separator'; key: string };

// QEMU formats parser messages into a 1024-byte buffer: at most 1023 bytes survive.
const MESSAGE_LIMIT = 1023;

const BACKSLASH = 0x5c;

/** The character each simple escape (`\"`, `\n`, …) stands for. */
const SIMPLE_ESCAPES = new Map<number, string>([
  [0x22, '"'],
  [0x27, "'"],
  [0x5c, '\\'],
  [0x2f, '/'],
  [0x62, '\b'],
  [0x66, '\f'],
  [0x6e, '\n'],
  [0x72, '\r'],
  [0x74, '\t'],
]);

const KEYWORDS = new Map<string, unknown>([
  ['true', true],
  ['false', false],
  ['null', null],
]);

export class QmpJsonParser {
  #stack: Frame[] = [];
  #done = false;
  #value: unknown;
  #error: string | undefined;

  /** Feeds the next token of the current message. */
  push(kind: JsonTokenKind, text: Buffer): void {
    if (this.#done || this.#error !== undefined) return;
    const frame = this.#stack.at(-1);
    if (frame === undefined) {
      this.#begin(kind, text);
    } else if (frame.kind === 'array') {
      this.#inArray(frame, kind, text);
    } else {
      this.#inObject(frame, kind, text);
    }
  }

  /** Ends the current message: its value or error. The parser is then ready for the next one. */
  finish(): QmpJsonParseResult {
    // A message ends on a token that completes or breaks the value, so running
    // out of tokens first cannot happen with the streamer's bracket counting.
    const result: QmpJsonParseResult =
      this.#error !== undefined
        ? { ok: false, error: this.#error }
        : this.#done
          ? { ok: true, value: this.#value }
          : { ok: false, error: 'JSON parse error, premature EOI' };
    this.reset();
    return result;
  }

  /** Drops the current message. */
  reset(): void {
    this.#stack = [];
    this.#done = false;
    this.#value = undefined;
    this.#error = undefined;
  }

  #inArray(frame: Frame & { kind: 'array' }, kind: JsonTokenKind, text: Buffer): void {
    if (frame.state === 'element') return this.#begin(kind, text);
    if (kind === JsonTokenKind.RightSquare) return this.#close();
    if (frame.state === 'open') return this.#begin(kind, text);
    if (kind !== JsonTokenKind.Comma) return this.#fail('expected separator in list');
    frame.state = 'element';
  }

  #inObject(frame: Frame & { kind: 'object' }, kind: JsonTokenKind, text: Buffer): void {
    switch (frame.state) {
      case 'open':
        return kind === JsonTokenKind.RightCurly ? this.#close() : this.#begin(kind, text);
      case 'key':
      case 'value':
        return this.#begin(kind, text);
      case 'colon':
        if (kind !== JsonTokenKind.Colon) return this.#fail('missing : in object pair');
        frame.state = 'value';
        return;
      case 'separator':
        if (kind === JsonTokenKind.RightCurly) return this.#close();
        if (kind !== JsonTokenKind.Comma) return this.#fail('expected separator in dict');
        frame.state = 'key';
    }
  }

  /** `kind` is the first token of a value. */
  #begin(kind: JsonTokenKind, text: Buffer): void {
    switch (kind) {
      case JsonTokenKind.LeftCurly:
        this.#stack.push({ kind: 'object', value: {}, state: 'open', key: '' });
        return;
      case JsonTokenKind.LeftSquare:
        this.#stack.push({ kind: 'array', value: [], state: 'open' });
        return;
      case JsonTokenKind.String: {
        const string = this.#string(text);
        if (string !== undefined) this.#complete(string);
        return;
      }
      case JsonTokenKind.Integer: {
        // QEMU keeps integers as int64 where possible, so "-0" is plain 0.
        const integer = Number(text.toString('latin1'));
        return this.#complete(integer === 0 ? 0 : integer);
      }
      case JsonTokenKind.Float:
        return this.#complete(Number(text.toString('latin1')));
      case JsonTokenKind.Keyword: {
        const word = text.toString('latin1', 0, MESSAGE_LIMIT);
        if (!KEYWORDS.has(word)) return this.#fail(`invalid keyword '${word}'`);
        return this.#complete(KEYWORDS.get(word));
      }
      default:
        return this.#fail('expecting value');
    }
  }

  /** The innermost container ended. */
  #close(): void {
    const frame = this.#stack.pop();
    if (frame !== undefined) this.#complete(frame.value);
  }

  /** A whole value was read: store it in its container, or it is the result. */
  #complete(value: unknown): void {
    const frame = this.#stack.at(-1);
    if (frame === undefined) {
      this.#done = true;
      this.#value = value;
    } else if (frame.kind === 'array') {
      frame.value.push(value);
      frame.state = 'separator';
    } else if (frame.state === 'value') {
      if (Object.hasOwn(frame.value, frame.key)) return this.#fail('duplicate key');
      // defineProperty, so that a "__proto__" key is data, not the prototype.
      Object.defineProperty(frame.value, frame.key, { value, enumerable: true, writable: true, configurable: true });
      frame.state = 'separator';
    } else {
      if (typeof value !== 'string') return this.#fail('key is not a string in object');
      frame.key = value;
      frame.state = 'colon';
    }
  }

  #fail(message: string): undefined {
    // Only "invalid keyword" can be long, and keywords are ASCII: characters are bytes.
    this.#error = `JSON parse error, ${message.slice(0, MESSAGE_LIMIT)}`;
    this.#stack = [];
    return undefined;
  }

  /** Decodes a string token (quotes included); undefined after reporting an error. */
  #string(text: Buffer): string | undefined {
    const end = text.length - 1;
    let decoded = '';
    for (let pos = 1; pos < end; ) {
      const byte = text[pos] ?? 0;
      if (byte === BACKSLASH) {
        const escape = this.#escape(text, pos);
        if (escape === undefined) return undefined;
        decoded += escape.text;
        pos = escape.next;
        continue;
      }
      const asciiEnd = plainAsciiRunEnd(text, pos, end);
      if (asciiEnd > pos) {
        decoded += text.toString('latin1', pos, asciiEnd);
        pos = asciiEnd;
        continue;
      }
      const step = decodeModUtf8(text, pos, end);
      if (step.codePoint < 0) return this.#fail('invalid UTF-8 sequence in string');
      decoded += String.fromCodePoint(step.codePoint);
      pos = step.next;
    }
    return decoded;
  }

  /** Decodes the escape sequence at `start` (a backslash). */
  #escape(text: Buffer, start: number): { text: string; next: number } | undefined {
    const letter = text[start + 1] ?? 0;
    const simple = SIMPLE_ESCAPES.get(letter);
    if (simple !== undefined) return { text: simple, next: start + 2 };
    if (letter !== 0x75) return this.#fail('invalid escape sequence in string');
    let next = start + 6;
    let codePoint = hex4(text, start + 2);
    if (codePoint >= 0xd800 && codePoint <= 0xdbff && text[next] === BACKSLASH && text[next + 1] === 0x75) {
      const trailing = hex4(text, next + 2);
      if (trailing >= 0xdc00 && trailing <= 0xdfff) {
        codePoint = 0x10000 + (codePoint - 0xd800) * 0x400 + (trailing - 0xdc00);
        next += 6;
      } else {
        codePoint = -1;
      }
    }
    if (!isValidCodePoint(codePoint)) {
      // QEMU quotes the bytes it consumed, cut at the end of the token.
      const sequence = decodeModUtf8Lossy(text.subarray(start, Math.min(next, text.length)));
      return this.#fail(`${sequence} is not a valid Unicode character`);
    }
    return { text: String.fromCodePoint(codePoint), next };
  }
}

/** Value of the four hex digits at `pos` (bytes past the token count as non-digits), or -1. */
function hex4(text: Buffer, pos: number): number {
  let value = 0;
  for (let i = pos; i < pos + 4; i++) {
    const c = text[i] ?? 0;
    const digit =
      c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x41 && c <= 0x46 ? c - 0x37 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

/** End of the run of ASCII bytes other than backslash starting at `pos` (converted in bulk). */
function plainAsciiRunEnd(text: Buffer, pos: number, end: number): number {
  while (pos < end && (text[pos] ?? 0x80) < 0x80 && text[pos] !== BACKSLASH) pos++;
  return pos;
}
