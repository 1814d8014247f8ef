/**
 * Byte-level tokenizer for QMP input, behaving like QEMU 7.2's
 * qobject/json-lexer.c (without the `%` interpolation that only QEMU's
 * internal callers enable).
 *
 * It accepts RFC 8259 tokens plus QEMU's extensions: single-quoted strings,
 * `\'` escapes, any byte 0x20..0xFD inside strings (validated later by the
 * parser), and `[a-z]+` as keywords (the parser rejects unknown ones).
 * On a byte that cannot continue the current token it reports an Error token
 * holding the bad bytes and then skips input until a likely resync point:
 * a structural character, an ASCII control character other than TAB, or
 * 0xFE/0xFF.
 */

/** Token kinds, as QEMU's streamer and parser distinguish them. */
export const JsonTokenKind = {
  LeftCurly: 0,
  RightCurly: 1,
  LeftSquare: 2,
  RightSquare: 3,
  Colon: 4,
  Comma: 5,
  Integer: 6,
  Float: 7,
  Keyword: 8,
  String: 9,
  /** Bytes the lexer rejected, reported as "stray '…'". */
  Error: 10,
  /** A token that outgrew the size limit before it ended. */
  Overlong: 11,
} as const;
export type JsonTokenKind = (typeof JsonTokenKind)[keyof typeof JsonTokenKind];

/** Receives each token; `text` is only valid during the call. */
export type JsonTokenSink = (kind: JsonTokenKind, text: Buffer) => void;

const State = {
  Start: 0,
  Recovery: 1,
  DoubleQuoted: 2,
  DoubleQuotedEscape: 3,
  SingleQuoted: 4,
  SingleQuotedEscape: 5,
  Zero: 6,
  Sign: 7,
  Digits: 8,
  FractionStart: 9,
  Fraction: 10,
  ExponentStart: 11,
  ExponentSign: 12,
  Exponent: 13,
  Keyword: 14,
} as const;
type State = (typeof State)[keyof typeof State];

const QUOTE = 0x22;
const APOSTROPHE = 0x27;
const BACKSLASH = 0x5c;

const STRUCTURAL = new Map<number, JsonTokenKind>([
  [0x7b, JsonTokenKind.LeftCurly],
  [0x7d, JsonTokenKind.RightCurly],
  [0x5b, JsonTokenKind.LeftSquare],
  [0x5d, JsonTokenKind.RightSquare],
  [0x3a, JsonTokenKind.Colon],
  [0x2c, JsonTokenKind.Comma],
]);

// A small token buffer is kept between tokens; a big one is dropped once used.
const INITIAL_BUFFER_BYTES = 256;
const RETAINED_BUFFER_BYTES = 64 * 1024;

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isWhitespace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
const isExponentMark = (c: number): boolean => c === 0x65 || c === 0x45;
const isStringByte = (c: number): boolean => c >= 0x20 && c <= 0xfd;

/** Where skipping after an error stops; control characters let clients force a reset. */
function endsRecovery(c: number): boolean {
  return (c < 0x20 && c !== 0x09) || c >= 0xfe || STRUCTURAL.has(c);
}

export class QmpJsonLexer {
  #state: State = State.Start;
  #buffer = Buffer.allocUnsafe(INITIAL_BUFFER_BYTES);
  #length = 0;

  /** @param maxTokenBytes a token longer than this is cut off and reported as Overlong */
  constructor(
    private readonly sink: JsonTokenSink,
    private readonly maxTokenBytes: number,
  ) {}

  feed(chunk: Uint8Array): void {
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] ?? 0;
      while (!this.#step(byte)) {
        // The byte ended the previous token without being part of it: read it again.
      }
      if (this.#length > this.maxTokenBytes) this.#emit(JsonTokenKind.Overlong);
    }
  }

  /**
   * The end of the input (QEMU's json_lexer_flush): a number or keyword in
   * progress ends there; any other token in progress is an error, reported
   * as it stands.
   */
  flush(): void {
    switch (this.#state) {
      case State.Start:
      case State.Recovery:
        this.#state = State.Start;
        return;
      case State.Zero:
      case State.Digits:
        return this.#emit(JsonTokenKind.Integer);
      case State.Fraction:
      case State.Exponent:
        return this.#emit(JsonTokenKind.Float);
      case State.Keyword:
        return this.#emit(JsonTokenKind.Keyword);
      default:
        return this.#emit(JsonTokenKind.Error);
    }
  }

  /** Advances the state machine by one byte; false when the byte must be read again. */
  #step(c: number): boolean {
    switch (this.#state) {
      case State.Start:
        return this.#start(c);
      case State.Recovery:
        if (!endsRecovery(c)) return true;
        this.#state = State.Start;
        return false;
      case State.DoubleQuoted:
      case State.SingleQuoted:
        return this.#string(c);
      case State.DoubleQuotedEscape:
        return this.#consumeIf(isStringByte(c), c, State.DoubleQuoted);
      case State.SingleQuotedEscape:
        return this.#consumeIf(isStringByte(c), c, State.SingleQuoted);
      case State.Sign:
        if (c === 0x30) return this.#consume(c, State.Zero);
        return this.#consumeIf(isDigit(c), c, State.Digits);
      case State.Zero:
        // A leading zero followed by a digit is an error, not two numbers.
        if (isDigit(c)) return this.#reject(c);
        if (c === 0x2e) return this.#consume(c, State.FractionStart);
        return this.#endBefore(JsonTokenKind.Integer);
      case State.Digits:
        if (isDigit(c)) return this.#consume(c, State.Digits);
        if (c === 0x2e) return this.#consume(c, State.FractionStart);
        if (isExponentMark(c)) return this.#consume(c, State.ExponentStart);
        return this.#endBefore(JsonTokenKind.Integer);
      case State.FractionStart:
        return this.#consumeIf(isDigit(c), c, State.Fraction);
      case State.Fraction:
        if (isDigit(c)) return this.#consume(c, State.Fraction);
        if (isExponentMark(c)) return this.#consume(c, State.ExponentStart);
        return this.#endBefore(JsonTokenKind.Float);
      case State.ExponentStart:
        if (c === 0x2b || c === 0x2d) return this.#consume(c, State.ExponentSign);
        return this.#consumeIf(isDigit(c), c, State.Exponent);
      case State.ExponentSign:
        return this.#consumeIf(isDigit(c), c, State.Exponent);
      case State.Exponent:
        if (isDigit(c)) return this.#consume(c, State.Exponent);
        return this.#endBefore(JsonTokenKind.Float);
      case State.Keyword:
        if (c >= 0x61 && c <= 0x7a) return this.#consume(c, State.Keyword);
        return this.#endBefore(JsonTokenKind.Keyword);
    }
  }

  #start(c: number): boolean {
    if (isWhitespace(c)) return true;
    const structural = STRUCTURAL.get(c);
    if (structural !== undefined) {
      this.#append(c);
      this.#emit(structural);
      return true;
    }
    if (c === QUOTE) return this.#consume(c, State.DoubleQuoted);
    if (c === APOSTROPHE) return this.#consume(c, State.SingleQuoted);
    if (c === 0x30) return this.#consume(c, State.Zero);
    if (c === 0x2d) return this.#consume(c, State.Sign);
    if (isDigit(c)) return this.#consume(c, State.Digits);
    return this.#consumeIf(c >= 0x61 && c <= 0x7a, c, State.Keyword);
  }

  #string(c: number): boolean {
    const quote = this.#state === State.DoubleQuoted ? QUOTE : APOSTROPHE;
    if (c === quote) {
      this.#append(c);
      this.#emit(JsonTokenKind.String);
      return true;
    }
    if (c === BACKSLASH) {
      const escape = this.#state === State.DoubleQuoted ? State.DoubleQuotedEscape : State.SingleQuotedEscape;
      return this.#consume(c, escape);
    }
    return this.#consumeIf(isStringByte(c), c, this.#state);
  }

  #consume(c: number, next: State): true {
    this.#append(c);
    this.#state = next;
    return true;
  }

  /** Consumes `c` into the token if `ok`, else rejects it. */
  #consumeIf(ok: boolean, c: number, next: State): true {
    return ok ? this.#consume(c, next) : this.#reject(c);
  }

  /** `c` cannot continue the token: report the token including `c`, then skip ahead. */
  #reject(c: number): true {
    this.#append(c);
    this.#emit(JsonTokenKind.Error, State.Recovery);
    return true;
  }

  /** The token ended just before `c`: emit it and have `c` read again from Start. */
  #endBefore(kind: JsonTokenKind): false {
    this.#emit(kind);
    return false;
  }

  #append(c: number): void {
    if (this.#length === this.#buffer.length) {
      // Never grows past the limit + 1: the caller reports Overlong right after.
      const size = Math.min(this.#buffer.length * 2, this.maxTokenBytes + 1);
      const bigger = Buffer.allocUnsafe(Math.max(size, this.#length + 1));
      this.#buffer.copy(bigger, 0, 0, this.#length);
      this.#buffer = bigger;
    }
    this.#buffer[this.#length++] = c;
  }

  /** Hands the buffered token to the sink and starts a new one in state `next`. */
  #emit(kind: JsonTokenKind, next: State = State.Start): void {
    const text = this.#buffer.subarray(0, this.#length);
    this.#length = 0;
    this.#state = next;
    this.sink(kind, text);
    if (this.#buffer.length > RETAINED_BUFFER_BYTES) this.#buffer = Buffer.allocUnsafe(INITIAL_BUFFER_BYTES);
  }
}
