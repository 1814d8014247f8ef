/**
 * The transmission phase: requests are read one after another and served
 * concurrently (up to MAX_REQUESTS_IN_FLIGHT), replies go out whole in
 * whatever order requests finish. A bad request gets an error reply and
 * the connection goes on, as the NBD reference asks: an unknown command or
 * flag, a range past the end, a READ over 32 MiB, a write to a read-only
 * export. Only framing violations end the connection: a bad request
 * magic, or a WRITE payload too large to skip.
 */
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_MAX_PAYLOAD,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
} from '../../core/protocols/nbd/constants.js';
import { NbdProtocolError } from '../../core/protocols/nbd/wire.js';
import type { NbdConnection } from './connection.js';
import type { Negotiated } from './handshake.js';
import { type ReplyError, sendError, serveRequest } from './requests.js';

/** A request as the server reads it; the offset may exceed 2^53 (then it is simply out of range). */
export interface ServerRequest {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}

/** WRITE payloads above 32 MiB up to this size are skipped and refused; larger ones drop the connection. */
export const MAX_SKIPPED_PAYLOAD = 128 * 1024 * 1024;

const COMMAND_NAMES: Record<number, string> = {
  [NBD_CMD_READ]: 'read',
  [NBD_CMD_WRITE]: 'write',
  [NBD_CMD_FLUSH]: 'flush',
  [NBD_CMD_TRIM]: 'trim',
  [NBD_CMD_CACHE]: 'cache',
  [NBD_CMD_WRITE_ZEROES]: 'write zeroes',
  [NBD_CMD_BLOCK_STATUS]: 'block status',
};

const CHANGES_DATA = new Set([NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES]);

/** Serves requests until NBD_CMD_DISC (after the requests in flight are answered) or the end of the stream. */
export async function transmit(c: NbdConnection, s: Negotiated): Promise<void> {
  for (;;) {
    await c.requestSlot();
    const request = parseRequest(await c.reader.read(NBD_REQUEST_SIZE));
    if (request.type === NBD_CMD_DISC) {
      await c.drainRequests();
      return;
    }
    let payload: Buffer | undefined;
    if (request.type === NBD_CMD_WRITE) {
      if (request.length > NBD_MAX_PAYLOAD) {
        if (request.length > MAX_SKIPPED_PAYLOAD) throw new NbdProtocolError(`write of ${request.length} bytes is too large`);
        await c.reader.skip(request.length);
        c.track(sendError(c, s, request, tooLarge(request.length)));
        continue;
      }
      payload = await c.reader.read(request.length);
    }
    const problem = checkRequest(request, s);
    c.track(problem === undefined ? serveRequest(c, s, request, payload) : sendError(c, s, request, problem));
  }
}

function parseRequest(buf: Buffer): ServerRequest {
  const magic = buf.readUInt32BE(0);
  if (magic !== NBD_REQUEST_MAGIC) throw new NbdProtocolError(`invalid magic (got 0x${magic.toString(16)})`);
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    cookie: buf.readBigUInt64BE(8),
    offset: Number(buf.readBigUInt64BE(16)),
    length: buf.readUInt32BE(24),
  };
}

/** The flags `type` may carry on this connection (FUA on every command, as SEND_FUA is advertised). */
function allowedFlags(type: number, structured: boolean): number {
  switch (type) {
    case NBD_CMD_READ:
      return NBD_CMD_FLAG_FUA | (structured ? NBD_CMD_FLAG_DF : 0);
    case NBD_CMD_WRITE_ZEROES:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
    default:
      return NBD_CMD_FLAG_FUA;
  }
}

/** Why the request cannot be served (qemu's checks and texts), or undefined. */
function checkRequest(request: ServerRequest, s: Negotiated): ReplyError | undefined {
  const { type, flags, offset, length } = request;
  const name = COMMAND_NAMES[type];
  if (name === undefined) return { error: NBD_EINVAL, message: `invalid request type (${type}) received` };
  const unsupported = flags & ~allowedFlags(type, s.structured);
  if (unsupported !== 0) return { error: NBD_EINVAL, message: `unsupported flags for command ${name} (got 0x${flags.toString(16)})` };
  if (CHANGES_DATA.has(type) && !s.export.settings.writable) return { error: NBD_EPERM, message: 'export is read-only' };
  if (type === NBD_CMD_READ && length > NBD_MAX_PAYLOAD) return tooLarge(length);
  const size = s.export.size;
  if (type !== NBD_CMD_FLUSH && (offset > size || length > size - offset)) {
    const error = type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
    return { error, message: `operation past EOF; From: ${offset}, Len: ${length}, Size: ${size}` };
  }
  if (type === NBD_CMD_BLOCK_STATUS) {
    if (s.contexts.length === 0) return { error: NBD_EINVAL, message: 'CMD_BLOCK_STATUS not negotiated' };
    if (length === 0) return { error: NBD_EINVAL, message: 'block status of 0 bytes' };
  }
  return undefined;
}

function tooLarge(length: number): ReplyError {
  return { error: NBD_EINVAL, message: `len (${length}) is larger than max len (${NBD_MAX_PAYLOAD})` };
}
