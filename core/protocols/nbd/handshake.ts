/**
 * The NBD handshake on the wire: greetings, option requests and replies,
 * NBD_INFO payloads and meta context lists. Encoders take values and return
 * Buffers; decoders take exactly the bytes of one field or payload (its
 * length known from a header the caller already checked) and throw
 * NbdProtocolError on anything malformed.
 */
import {
  NBD_EXPORT_NAME_REPLY_SIZE,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_MAGIC,
  NBD_OLDSTYLE_MAGIC,
  NBD_OPTS_MAGIC,
  NBD_OPTION_HEADER_SIZE,
  NBD_OPTION_REPLY_HEADER_SIZE,
  NBD_REP_FLAG_ERROR,
  NBD_REP_MAGIC,
  NBD_ZERO_PAD_SIZE,
} from './constants.js';
import { decodeString, encodeString, expectLength, NbdProtocolError, readU64, writeU64 } from './wire.js';

export type HandshakeStyle = 'newstyle' | 'oldstyle';

/** An export's size and transmission flags (NBD_INFO_EXPORT, EXPORT_NAME reply, oldstyle greeting). */
export interface ExportSummary {
  size: number;
  flags: number;
}

export interface BlockSizeInfo {
  minimum: number;
  preferred: number;
  maximum: number;
}

export type InfoReply =
  | ({ info: 'export' } & ExportSummary)
  | { info: 'name'; name: string }
  | { info: 'description'; description: string }
  | ({ info: 'block-size' } & BlockSizeInfo)
  | { info: 'unknown'; type: number };

export interface OptionHeader {
  option: number;
  length: number;
}

export interface OptionReplyHeader {
  option: number;
  type: number;
  length: number;
}

/* ---- greeting ---- */

/** The newstyle greeting: NBDMAGIC, IHAVEOPT, u16 handshake flags. */
export function encodeGreeting(handshakeFlags: number): Buffer {
  const buf = Buffer.alloc(18);
  buf.writeBigUInt64BE(NBD_MAGIC, 0);
  buf.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  buf.writeUInt16BE(handshakeFlags, 16);
  return buf;
}

/** Which handshake the server speaks, from the first 16 bytes it sends. */
export function decodeGreetingMagic(buf: Buffer): HandshakeStyle {
  if (buf.readBigUInt64BE(0) !== NBD_MAGIC) throw new NbdProtocolError('Invalid magic received');
  const second = buf.readBigUInt64BE(8);
  if (second === NBD_OPTS_MAGIC) return 'newstyle';
  if (second === NBD_OLDSTYLE_MAGIC) return 'oldstyle';
  throw new NbdProtocolError(`Bad server magic 0x${second.toString(16)}`);
}

/** The rest of an oldstyle greeting (136 bytes): size, u32 flags (transmission flags in the low half), padding. */
export function decodeOldstyleTail(buf: Buffer): ExportSummary {
  expectLength(buf, 8 + 4 + NBD_ZERO_PAD_SIZE, 'oldstyle greeting');
  return { size: readU64(buf, 0, 'export size'), flags: buf.readUInt32BE(8) & 0xffff };
}

export function encodeClientFlags(flags: number): Buffer {
  const buf = Buffer.alloc(4);
  buf.writeUInt32BE(flags >>> 0, 0);
  return buf;
}

export function decodeClientFlags(buf: Buffer): number {
  expectLength(buf, 4, 'client flags');
  return buf.readUInt32BE(0);
}

/* ---- option requests (client → server) ---- */

/** IHAVEOPT, the option, its length, then the data. */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(NBD_OPTION_HEADER_SIZE);
  header.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

export function decodeOptionHeader(buf: Buffer): OptionHeader {
  expectLength(buf, NBD_OPTION_HEADER_SIZE, 'option header');
  if (buf.readBigUInt64BE(0) !== NBD_OPTS_MAGIC) throw new NbdProtocolError('Bad option magic');
  return { option: buf.readUInt32BE(8), length: buf.readUInt32BE(12) };
}

/** INFO/GO data: u32 name length, the name, u16 count, the NBD_INFO_* types asked for. */
export function encodeInfoRequest(exportName: string, infos: readonly number[]): Buffer {
  const name = encodeString(exportName, 'export name');
  const buf = Buffer.alloc(4 + name.length + 2 + 2 * infos.length);
  buf.writeUInt32BE(name.length, 0);
  name.copy(buf, 4);
  buf.writeUInt16BE(infos.length, 4 + name.length);
  infos.forEach((info, i) => buf.writeUInt16BE(info, 6 + name.length + 2 * i));
  return buf;
}

export function decodeInfoRequest(data: Buffer): { exportName: string; infos: number[] } {
  expectLength(data, 6, 'INFO/GO', true);
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) throw new NbdProtocolError('INFO/GO name length overruns the option');
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) throw new NbdProtocolError('INFO/GO length does not match its contents');
  const infos = Array.from({ length: count }, (_, i) => data.readUInt16BE(6 + nameLength + 2 * i));
  return { exportName: decodeString(data.subarray(4, 4 + nameLength), 'export name'), infos };
}

/** LIST/SET_META_CONTEXT data: the export name, then the queries, each with a u32 length. */
export function encodeMetaContextRequest(exportName: string, queries: readonly string[]): Buffer {
  const parts = [encodeString(exportName, 'export name'), ...queries.map((q) => encodeString(q, 'meta context query'))];
  const buf = Buffer.alloc(4 + parts.reduce((sum, part) => sum + 4 + part.length, 0));
  let at = buf.writeUInt32BE(parts[0]!.length, 0);
  at += parts[0]!.copy(buf, at);
  at = buf.writeUInt32BE(queries.length, at);
  for (const part of parts.slice(1)) {
    at = buf.writeUInt32BE(part.length, at);
    at += part.copy(buf, at);
  }
  return buf;
}

export function decodeMetaContextRequest(data: Buffer): { exportName: string; queries: string[] } {
  let at = 0;
  const field = (what: string): Buffer => {
    if (at + 4 > data.length) throw new NbdProtocolError(`meta context request: ${what} overruns the option`);
    const length = data.readUInt32BE(at);
    if (at + 4 + length > data.length) throw new NbdProtocolError(`meta context request: ${what} overruns the option`);
    at += 4 + length;
    return data.subarray(at - length, at);
  };
  const exportName = decodeString(field('export name'), 'export name');
  if (at + 4 > data.length) throw new NbdProtocolError('meta context request: query count missing');
  const count = data.readUInt32BE(at);
  at += 4;
  // Each query needs at least its 4-byte length, so a huge count cannot make us loop long.
  if (count > (data.length - at) / 4) throw new NbdProtocolError('meta context request: query count overruns the option');
  const queries = Array.from({ length: count }, () => decodeString(field('query'), 'meta context query'));
  if (at !== data.length) throw new NbdProtocolError('meta context request: trailing bytes');
  return { exportName, queries };
}

/* ---- option replies (server → client) ---- */

export function encodeOptionReply(option: number, type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(NBD_OPTION_REPLY_HEADER_SIZE);
  header.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(type >>> 0, 12);
  header.writeUInt32BE(payload.length, 16);
  return Buffer.concat([header, payload]);
}

export function decodeOptionReplyHeader(buf: Buffer): OptionReplyHeader {
  expectLength(buf, NBD_OPTION_REPLY_HEADER_SIZE, 'option reply header');
  if (buf.readBigUInt64BE(0) !== NBD_REP_MAGIC) throw new NbdProtocolError('Unexpected option reply magic');
  return { option: buf.readUInt32BE(8), type: buf.readUInt32BE(12), length: buf.readUInt32BE(16) };
}

export function isErrorReply(type: number): boolean {
  return (type & NBD_REP_FLAG_ERROR) !== 0;
}

/** The text an error reply may carry (qemu sends one, nbdkit none); invalid UTF-8 is replaced, not refused. */
export function decodeErrorMessage(payload: Buffer): string {
  return payload.toString('utf8').replace(/\0/g, '');
}

/** REP_SERVER payload: u32 name length, the name, a description in the rest. */
export function encodeServerReply(name: string, description = ''): Buffer {
  const nameBuf = encodeString(name, 'export name');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(nameBuf.length, 0);
  return Buffer.concat([length, nameBuf, encodeString(description, 'export description')]);
}

export function decodeServerReply(payload: Buffer): { name: string; description: string } {
  expectLength(payload, 4, 'NBD_REP_SERVER', true);
  const nameLength = payload.readUInt32BE(0);
  if (nameLength > payload.length - 4) throw new NbdProtocolError('NBD_REP_SERVER name overruns the reply');
  return {
    name: decodeString(payload.subarray(4, 4 + nameLength), 'export name'),
    description: decodeString(payload.subarray(4 + nameLength), 'export description'),
  };
}

/** REP_META_CONTEXT payload: u32 context id, then the context name. */
export function encodeMetaContextReply(id: number, name: string): Buffer {
  const nameBuf = encodeString(name, 'meta context name');
  const buf = Buffer.alloc(4 + nameBuf.length);
  buf.writeUInt32BE(id, 0);
  nameBuf.copy(buf, 4);
  return buf;
}

export function decodeMetaContextReply(payload: Buffer): { id: number; name: string } {
  expectLength(payload, 4, 'NBD_REP_META_CONTEXT', true);
  return { id: payload.readUInt32BE(0), name: decodeString(payload.subarray(4), 'meta context name') };
}

/* ---- NBD_INFO payloads (inside REP_INFO) ---- */

export function encodeInfoReply(reply: InfoReply): Buffer {
  switch (reply.info) {
    case 'export': {
      const buf = Buffer.alloc(12);
      buf.writeUInt16BE(NBD_INFO_EXPORT, 0);
      writeU64(buf, 2, reply.size);
      buf.writeUInt16BE(reply.flags, 10);
      return buf;
    }
    case 'name':
      return Buffer.concat([u16(NBD_INFO_NAME), encodeString(reply.name, 'export name')]);
    case 'description':
      return Buffer.concat([u16(NBD_INFO_DESCRIPTION), encodeString(reply.description, 'export description')]);
    case 'block-size': {
      const buf = Buffer.alloc(14);
      buf.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
      buf.writeUInt32BE(reply.minimum, 2);
      buf.writeUInt32BE(reply.preferred, 6);
      buf.writeUInt32BE(reply.maximum, 10);
      return buf;
    }
    case 'unknown':
      return u16(reply.type);
  }
}

export function decodeInfoReply(payload: Buffer): InfoReply {
  expectLength(payload, 2, 'NBD_REP_INFO', true);
  const type = payload.readUInt16BE(0);
  switch (type) {
    case NBD_INFO_EXPORT:
      expectLength(payload, 12, 'NBD_INFO_EXPORT');
      return { info: 'export', size: readU64(payload, 2, 'export size'), flags: payload.readUInt16BE(10) };
    case NBD_INFO_NAME:
      return { info: 'name', name: decodeString(payload.subarray(2), 'export name') };
    case NBD_INFO_DESCRIPTION:
      return { info: 'description', description: decodeString(payload.subarray(2), 'export description') };
    case NBD_INFO_BLOCK_SIZE:
      expectLength(payload, 14, 'NBD_INFO_BLOCK_SIZE');
      return {
        info: 'block-size',
        minimum: payload.readUInt32BE(2),
        preferred: payload.readUInt32BE(6),
        maximum: payload.readUInt32BE(10),
      };
    default:
      return { info: 'unknown', type };
  }
}

/** Why a server's block sizes are unusable (qemu's checks), or undefined when they are fine. */
export function blockSizeProblem({ minimum, preferred, maximum }: BlockSizeInfo): string | undefined {
  const powerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;
  if (!powerOfTwo(minimum) || minimum > 64 * 1024) return `server minimum block size ${minimum} is not a power of two up to 64 KiB`;
  if (!powerOfTwo(preferred)) return `server preferred block size ${preferred} is not a power of two`;
  if (preferred < minimum) return `server preferred block size ${preferred} is smaller than minimum ${minimum}`;
  if (maximum < minimum || (maximum !== 0xffffffff && maximum % minimum !== 0)) {
    return `server maximum block size ${maximum} is not a multiple of minimum ${minimum}`;
  }
  return undefined;
}

/* ---- EXPORT_NAME reply ---- */

/** Size, flags, and the 124 zero bytes unless the client agreed to NO_ZEROES. */
export function encodeExportNameReply(summary: ExportSummary, noZeroes: boolean): Buffer {
  const buf = Buffer.alloc(NBD_EXPORT_NAME_REPLY_SIZE + (noZeroes ? 0 : NBD_ZERO_PAD_SIZE));
  writeU64(buf, 0, summary.size);
  buf.writeUInt16BE(summary.flags, 8);
  return buf;
}

/** The first 10 bytes of the EXPORT_NAME reply (the caller skips the padding it asked for). */
export function decodeExportNameReply(buf: Buffer): ExportSummary {
  expectLength(buf, NBD_EXPORT_NAME_REPLY_SIZE, 'EXPORT_NAME reply');
  return { size: readU64(buf, 0, 'export size'), flags: buf.readUInt16BE(8) };
}

function u16(value: number): Buffer {
  const buf = Buffer.alloc(2);
  buf.writeUInt16BE(value, 0);
  return buf;
}
