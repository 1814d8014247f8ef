/**
 * QMP input framing: splits the bytes a client sends into JSON values the way
 * QEMU 7.2's json-streamer.c does, then parses each one.
 *
 * Values need no delimiter. A message ends as soon as its braces and brackets
 * balance (or a closer has no opener), so a scalar is a message by itself and
 * stray closers each yield an error. Errors use QEMU's exact descriptions,
 * and the stream carries on with the next bytes, so one burst of garbage can
 * produce several errors. Limits on size, token count and nesting keep memory
 * bounded whatever a peer sends: a message over a limit is reported and
 * dropped, and the tokens after it are read as new messages.
 */
import { QmpJsonLexer, JsonTokenKind } from './qmp-json-lexer.js';
import { QmpJsonParser } from './qmp-json-parser.js';
import type { QmpJsonParseResult } from './qmp-json-parser.js';
import { decodeModUtf8Lossy } from '../util/mod-utf8.js';

export interface QmpJsonStreamHandlers {
  /** A complete value (any JSON type; the session rejects non-objects). */
  value(value: unknown): void;
  /** A QEMU error description, e.g. "JSON parse error, expecting value". */
  error(message: string): void;
}

export interface QmpJsonStreamLimits {
  /** Open braces plus brackets allowed at once. */
  maxDepth: number;
  /** Bytes of tokens in one message (and in one token). */
  maxValueBytes: number;
  /** Tokens in one message. */
  maxTokens: number;
}

/** QEMU's json-streamer limits. */
export const QEMU_JSON_STREAM_LIMITS: Readonly<QmpJsonStreamLimits> = {
  maxDepth: 1024,
  maxValueBytes: 64 * 1024 * 1024,
  maxTokens: 2 * 1024 * 1024,
};

export class QmpJsonStream {
  readonly #handlers: QmpJsonStreamHandlers;
  readonly #limits: QmpJsonStreamLimits;
  readonly #lexer: QmpJsonLexer;
  readonly #parser = new QmpJsonParser();
  #braces = 0;
  #brackets = 0;
  #tokenBytes = 0;
  #tokenCount = 0;

  constructor(handlers: QmpJsonStreamHandlers, limits: Partial<QmpJsonStreamLimits> = {}) {
    this.#handlers = handlers;
    this.#limits = { ...QEMU_JSON_STREAM_LIMITS, ...limits };
    this.#lexer = new QmpJsonLexer((kind, text) => this.#token(kind, text), this.#limits.maxValueBytes);
  }

  /** Feeds bytes as they arrive; chunks may split tokens and UTF-8 sequences anywhere. */
  push(chunk: Buffer): void {
    this.#lexer.feed(chunk);
  }

  /** The end of the input (QEMU's json_message_parser_flush): a message still open ends there, as an error. */
  flush(): void {
    this.#lexer.flush();
    if (this.#tokenCount > 0) this.#end(this.#parser.finish());
  }

  #token(kind: JsonTokenKind, text: Buffer): void {
    switch (kind) {
      case JsonTokenKind.LeftCurly:
        this.#braces++;
        break;
      case JsonTokenKind.RightCurly:
        this.#braces--;
        break;
      case JsonTokenKind.LeftSquare:
        this.#brackets++;
        break;
      case JsonTokenKind.RightSquare:
        this.#brackets--;
        break;
      case JsonTokenKind.Error:
        return this.#end({ ok: false, error: `JSON parse error, stray '${decodeModUtf8Lossy(text)}'` });
      case JsonTokenKind.Overlong:
        return this.#end({ ok: false, error: 'JSON token size limit exceeded' });
    }
    // Checked before the token is kept, in QEMU's order; "+ 1" is QEMU's too.
    if (this.#tokenBytes + text.length + 1 > this.#limits.maxValueBytes) {
      return this.#end({ ok: false, error: 'JSON token size limit exceeded' });
    }
    if (this.#tokenCount + 1 > this.#limits.maxTokens) {
      return this.#end({ ok: false, error: 'JSON token count limit exceeded' });
    }
    if (this.#braces + this.#brackets > this.#limits.maxDepth) {
      return this.#end({ ok: false, error: 'JSON nesting depth limit exceeded' });
    }
    this.#tokenBytes += text.length;
    this.#tokenCount++;
    this.#parser.push(kind, text);
    const open = this.#braces > 0 || this.#brackets > 0;
    if (open && this.#braces >= 0 && this.#brackets >= 0) return;
    this.#end(this.#parser.finish());
  }

  /** Ends the current message, resetting all state before the handler runs. */
  #end(result: QmpJsonParseResult): void {
    this.#parser.reset();
    this.#braces = 0;
    this.#brackets = 0;
    this.#tokenBytes = 0;
    this.#tokenCount = 0;
    if (result.ok) {
      this.#handlers.value(result.value);
    } else {
      this.#handlers.error(result.error);
    }
  }
}
