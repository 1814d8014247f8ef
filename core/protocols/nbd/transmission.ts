/**
 * The NBD transmission phase on the wire: compact requests, simple replies,
 * structured reply chunks and their payloads (OFFSET_DATA, OFFSET_HOLE,
 * BLOCK_STATUS, ERROR, ERROR_OFFSET). Cookies are bigints: a server must
 * echo any u64 unchanged.
 */
import {
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR_BIT,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_SIZE,
  NBD_STRUCTURED_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_SIZE,
} from './constants.js';
import { expectLength, NbdProtocolError, readU64, writeU64 } from './wire.js';

export interface NbdRequest {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}

export interface SimpleReply {
  kind: 'simple';
  error: number;
  cookie: bigint;
}

export interface ChunkHeader {
  kind: 'chunk';
  flags: number;
  type: number;
  cookie: bigint;
  /** Payload length in bytes (up to 4 GiB: check it before reading). */
  length: number;
}

export type ReplyHeader = SimpleReply | ChunkHeader;

/** One extent of a BLOCK_STATUS chunk. */
export interface NbdExtent {
  length: number;
  flags: number;
}

export interface ErrorChunk {
  error: number;
  message: string;
  /** ERROR_OFFSET only: where the failure lies. */
  offset?: number;
}

/* ---- requests ---- */

export function encodeRequest(request: NbdRequest): Buffer {
  const buf = Buffer.alloc(NBD_REQUEST_SIZE);
  buf.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  buf.writeUInt16BE(request.flags, 4);
  buf.writeUInt16BE(request.type, 6);
  buf.writeBigUInt64BE(request.cookie, 8);
  writeU64(buf, 16, request.offset);
  buf.writeUInt32BE(request.length, 24);
  return buf;
}

export function decodeRequest(buf: Buffer): NbdRequest {
  expectLength(buf, NBD_REQUEST_SIZE, 'request header');
  const magic = buf.readUInt32BE(0);
  if (magic !== NBD_REQUEST_MAGIC) throw new NbdProtocolError(`invalid magic (got 0x${magic.toString(16)})`);
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    cookie: buf.readBigUInt64BE(8),
    offset: readU64(buf, 16, 'request offset'),
    length: buf.readUInt32BE(24),
  };
}

/* ---- reply headers ---- */

export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  const buf = Buffer.alloc(NBD_SIMPLE_REPLY_SIZE);
  buf.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  buf.writeUInt32BE(error, 4);
  buf.writeBigUInt64BE(cookie, 8);
  return buf;
}

export function encodeChunkHeader(header: Omit<ChunkHeader, 'kind'>): Buffer {
  const buf = Buffer.alloc(NBD_STRUCTURED_REPLY_SIZE);
  buf.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  buf.writeUInt16BE(header.flags, 4);
  buf.writeUInt16BE(header.type, 6);
  buf.writeBigUInt64BE(header.cookie, 8);
  buf.writeUInt32BE(header.length, 16);
  return buf;
}

/** The whole header's size, from its first 4 bytes (the magic). */
export function replyHeaderSize(magicBytes: Buffer): number {
  const magic = magicBytes.readUInt32BE(0);
  if (magic === NBD_SIMPLE_REPLY_MAGIC) return NBD_SIMPLE_REPLY_SIZE;
  if (magic === NBD_STRUCTURED_REPLY_MAGIC) return NBD_STRUCTURED_REPLY_SIZE;
  throw new NbdProtocolError(`invalid reply magic 0x${magic.toString(16)}`);
}

/** A whole reply header, simple (16 bytes) or structured (20 bytes). */
export function decodeReplyHeader(buf: Buffer): ReplyHeader {
  const size = replyHeaderSize(buf);
  expectLength(buf, size, 'reply header');
  if (size === NBD_SIMPLE_REPLY_SIZE) return { kind: 'simple', error: buf.readUInt32BE(4), cookie: buf.readBigUInt64BE(8) };
  return {
    kind: 'chunk',
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    cookie: buf.readBigUInt64BE(8),
    length: buf.readUInt32BE(16),
  };
}

export function isErrorChunk(type: number): boolean {
  return (type & NBD_REPLY_TYPE_ERROR_BIT) !== 0;
}

/* ---- chunk payloads ---- */

/** The chunk header and the 8-byte offset that precede OFFSET_DATA's data. */
export function encodeOffsetDataHeader(flags: number, cookie: bigint, offset: number, dataLength: number): Buffer {
  const offsetBuf = Buffer.alloc(8);
  writeU64(offsetBuf, 0, offset);
  return Buffer.concat([encodeChunkHeader({ flags, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie, length: 8 + dataLength }), offsetBuf]);
}

export function decodeOffset(buf: Buffer): number {
  expectLength(buf, 8, 'offset');
  return readU64(buf, 0, 'chunk offset');
}

export function encodeOffsetHole(flags: number, cookie: bigint, offset: number, length: number): Buffer {
  const payload = Buffer.alloc(12);
  writeU64(payload, 0, offset);
  payload.writeUInt32BE(length, 8);
  return Buffer.concat([encodeChunkHeader({ flags, type: NBD_REPLY_TYPE_OFFSET_HOLE, cookie, length: 12 }), payload]);
}

export function decodeOffsetHole(payload: Buffer): { offset: number; length: number } {
  expectLength(payload, 12, 'NBD_REPLY_TYPE_OFFSET_HOLE');
  const length = payload.readUInt32BE(8);
  if (length === 0) throw new NbdProtocolError('NBD_REPLY_TYPE_OFFSET_HOLE of length 0');
  return { offset: readU64(payload, 0, 'hole offset'), length };
}

/** A BLOCK_STATUS chunk: u32 context id, then (u32 length, u32 flags) per extent. */
export function encodeBlockStatus(flags: number, cookie: bigint, contextId: number, extents: readonly NbdExtent[]): Buffer {
  const payload = Buffer.alloc(4 + 8 * extents.length);
  payload.writeUInt32BE(contextId, 0);
  extents.forEach((e, i) => {
    payload.writeUInt32BE(e.length, 4 + 8 * i);
    payload.writeUInt32BE(e.flags >>> 0, 8 + 8 * i);
  });
  return Buffer.concat([encodeChunkHeader({ flags, type: NBD_REPLY_TYPE_BLOCK_STATUS, cookie, length: payload.length }), payload]);
}

/** Extents from whole 8-byte descriptors (a BLOCK_STATUS payload after its context id, or part of it). */
export function decodeExtents(buf: Buffer): NbdExtent[] {
  if (buf.length % 8 !== 0) throw new NbdProtocolError('invalid NBD_REPLY_TYPE_BLOCK_STATUS payload');
  return Array.from({ length: buf.length / 8 }, (_, i) => ({ length: buf.readUInt32BE(8 * i), flags: buf.readUInt32BE(8 * i + 4) }));
}

/** An ERROR or ERROR_OFFSET chunk; keep messages short, qemu refuses payloads over 1000 bytes. */
export function encodeErrorChunk(flags: number, cookie: bigint, type: number, chunk: ErrorChunk): Buffer {
  const message = Buffer.from(chunk.message, 'utf8').subarray(0, 0xffff);
  const withOffset = type === NBD_REPLY_TYPE_ERROR_OFFSET;
  const payload = Buffer.alloc(6 + message.length + (withOffset ? 8 : 0));
  payload.writeUInt32BE(chunk.error, 0);
  payload.writeUInt16BE(message.length, 4);
  message.copy(payload, 6);
  if (withOffset) writeU64(payload, 6 + message.length, chunk.offset ?? 0);
  return Buffer.concat([encodeChunkHeader({ flags, type, cookie, length: payload.length }), payload]);
}

export function decodeErrorChunk(type: number, payload: Buffer): ErrorChunk {
  expectLength(payload, 6, 'structured error', true);
  const error = payload.readUInt32BE(0);
  if (error === 0) throw new NbdProtocolError('server sent structured error chunk with error = 0');
  const messageLength = payload.readUInt16BE(4);
  const withOffset = type === NBD_REPLY_TYPE_ERROR_OFFSET;
  const expected = 6 + messageLength + (withOffset ? 8 : 0);
  if (withOffset ? payload.length !== expected : payload.length < expected) {
    throw new NbdProtocolError('server sent structured error chunk with incorrect message size');
  }
  const message = payload.subarray(6, 6 + messageLength).toString('utf8');
  return withOffset ? { error, message, offset: readU64(payload, 6 + messageLength, 'error offset') } : { error, message };
}
