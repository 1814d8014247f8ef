/** Field helpers shared by the NBD encoders and decoders. */
import { NBD_MAX_STRING } from './constants.js';

/**
 * The peer broke the protocol: a bad magic, a length that contradicts its
 * header, a value out of range. The connection cannot be trusted after it
 * (the spec's "hard disconnect").
 */
export class NbdProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NbdProtocolError';
  }
}

/** A u64 as a number; offsets and sizes past 2^53 are refused (no image that large is addressable here). */
export function readU64(buf: Buffer, at: number, what: string): number {
  const value = buf.readBigUInt64BE(at);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdProtocolError(`${what} ${value} is too large`);
  return Number(value);
}

export function writeU64(buf: Buffer, at: number, value: number): void {
  buf.writeBigUInt64BE(BigInt(value), at);
}

/** A string field, checked as the spec requires: UTF-8, no NUL, at most 4096 bytes. */
export function decodeString(buf: Buffer, what: string): string {
  if (buf.length > NBD_MAX_STRING) throw new NbdProtocolError(`${what} is longer than ${NBD_MAX_STRING} bytes`);
  if (buf.includes(0)) throw new NbdProtocolError(`${what} contains a NUL byte`);
  return buf.toString('utf8');
}

/** A string to send; the same rules as decodeString, as a caller mistake. */
export function encodeString(text: string, what: string): Buffer {
  const buf = Buffer.from(text, 'utf8');
  if (buf.length > NBD_MAX_STRING) throw new RangeError(`${what} is longer than ${NBD_MAX_STRING} bytes`);
  if (buf.includes(0)) throw new RangeError(`${what} contains a NUL byte`);
  return buf;
}

/** Checks that a payload has exactly (or, with `atLeast`, at least) `size` bytes. */
export function expectLength(payload: Buffer, size: number, what: string, atLeast = false): void {
  if (atLeast ? payload.length < size : payload.length !== size) {
    throw new NbdProtocolError(`invalid ${what} payload of ${payload.length} bytes`);
  }
}
