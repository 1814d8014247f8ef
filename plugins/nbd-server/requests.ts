/**
 * Serving one checked request through the export's edge — the node's own
 * I/O path, so drains hold it and write hooks (backup's copy-before-write)
 * see it — and answering it:
 *
 * - READ, with structured replies, as qemu does: the range's block status
 *   decides, zero runs go out as OFFSET_HOLE chunks and the rest is read
 *   and sent as OFFSET_DATA (one OFFSET_DATA with DF); simple replies
 *   carry the data after the header;
 * - BLOCK_STATUS: one chunk per selected context, REQ_ONE honoured;
 * - errors: an ERROR chunk with a short message once structured replies
 *   are on, else a simple reply; other successes are simple replies.
 *
 * Nothing here throws: every failure becomes the request's error reply.
 */
import { toBlockIoError } from '../../core/errors.js';
import {
  NBD_CMD_BLOCK_STATUS,
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
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
} from '../../core/protocols/nbd/constants.js';
import { nbdFromErrno } from '../../core/protocols/nbd/errno.js';
import {
  encodeBlockStatus,
  encodeChunkHeader,
  encodeErrorChunk,
  encodeOffsetDataHeader,
  encodeOffsetHole,
  encodeSimpleReply,
} from '../../core/protocols/nbd/transmission.js';
import type { NbdConnection } from './connection.js';
import type { Negotiated } from './handshake.js';
import { contextExtents } from './meta-contexts.js';
import type { ServerRequest } from './transmission.js';

export interface ReplyError {
  /** The NBD error value. */
  error: number;
  message: string;
}

/** Error messages are kept short: qemu's client refuses non-data chunks over 1000 bytes. */
const MAX_MESSAGE = 256;

/** Performs `request` and sends its reply; never rejects. */
export async function serveRequest(c: NbdConnection, s: Negotiated, request: ServerRequest, payload?: Buffer): Promise<void> {
  try {
    if (request.type === NBD_CMD_READ) return await read(c, s, request);
    if (request.type === NBD_CMD_BLOCK_STATUS) return await blockStatus(c, s, request);
    await perform(s, request, payload);
    await c.send([encodeSimpleReply(0, request.cookie)]);
  } catch (error) {
    const failure = toBlockIoError(error);
    const fastZero = request.type === NBD_CMD_WRITE_ZEROES && (request.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0;
    await sendError(c, s, request, { error: nbdFromErrno(failure.errno, fastZero), message: failure.message });
  }
}

/** Answers `request` with an error. */
export async function sendError(c: NbdConnection, s: Negotiated, request: ServerRequest, problem: ReplyError): Promise<void> {
  if (!s.structured) return c.send([encodeSimpleReply(problem.error, request.cookie)]);
  const message = problem.message.length > MAX_MESSAGE ? `${problem.message.slice(0, MAX_MESSAGE - 3)}...` : problem.message;
  await c.send([encodeErrorChunk(NBD_REPLY_FLAG_DONE, request.cookie, NBD_REPLY_TYPE_ERROR, { error: problem.error, message })]);
}

/** The commands without a reply payload. */
async function perform(s: Negotiated, request: ServerRequest, payload: Buffer | undefined): Promise<void> {
  const { edge, settings } = s.export;
  const { offset, length, flags } = request;
  const fua = (flags & NBD_CMD_FLAG_FUA) !== 0 || settings.writethrough;
  switch (request.type) {
    case NBD_CMD_WRITE:
      return edge.write(offset, payload!, { fua });
    case NBD_CMD_WRITE_ZEROES:
      return edge.writeZeroes(offset, length, {
        fua,
        mayUnmap: (flags & NBD_CMD_FLAG_NO_HOLE) === 0,
        noFallback: (flags & NBD_CMD_FLAG_FAST_ZERO) !== 0,
      });
    case NBD_CMD_TRIM:
      await edge.discard(offset, length);
      if (fua) await edge.flush();
      return;
    case NBD_CMD_FLUSH:
      return edge.flush();
    default:
      // NBD_CMD_CACHE: a hint; the node has no cache to warm.
      return;
  }
}

async function read(c: NbdConnection, s: Negotiated, request: ServerRequest): Promise<void> {
  const { edge } = s.export;
  const { offset, length, cookie } = request;
  if (length === 0) {
    if (s.structured) return c.send([encodeChunkHeader({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_NONE, cookie, length: 0 })]);
    return c.send([encodeSimpleReply(0, cookie)]);
  }
  const data = Buffer.allocUnsafe(length);
  if (!s.structured || (request.flags & NBD_CMD_FLAG_DF) !== 0) {
    await edge.read(offset, data);
    if (!s.structured) return c.send([encodeSimpleReply(0, cookie), data]);
    return c.send([encodeOffsetDataHeader(NBD_REPLY_FLAG_DONE, cookie, offset, length), data]);
  }
  const pieces = await sparsePieces(s, offset, length);
  await Promise.all(pieces.filter((p) => !p.hole).map((p) => edge.read(p.offset, data.subarray(p.offset - offset, p.offset - offset + p.length))));
  const out: Buffer[] = [];
  pieces.forEach((piece, i) => {
    const flags = i === pieces.length - 1 ? NBD_REPLY_FLAG_DONE : 0;
    if (piece.hole) {
      out.push(encodeOffsetHole(flags, cookie, piece.offset, piece.length));
    } else {
      const at = piece.offset - offset;
      out.push(encodeOffsetDataHeader(flags, cookie, piece.offset, piece.length), data.subarray(at, at + piece.length));
    }
  });
  await c.send(out);
}

interface Piece {
  offset: number;
  length: number;
  hole: boolean;
}

/** The read range cut where it reads as zeroes (holes) and where it must be read (data), neighbours merged. */
async function sparsePieces(s: Negotiated, offset: number, length: number): Promise<Piece[]> {
  const pieces: Piece[] = [];
  for (const extent of await s.export.edge.blockStatus(offset, length)) {
    const last = pieces[pieces.length - 1];
    if (last !== undefined && last.hole === extent.zero) last.length += extent.length;
    else pieces.push({ offset: extent.offset, length: extent.length, hole: extent.zero });
  }
  const covered = pieces.reduce((sum, p) => sum + p.length, 0);
  // The node may have shrunk since the request was checked: read what is left as data, the read reports it.
  if (covered < length) pieces.push({ offset: offset + covered, length: length - covered, hole: false });
  return pieces;
}

async function blockStatus(c: NbdConnection, s: Negotiated, request: ServerRequest): Promise<void> {
  const { offset, length, cookie } = request;
  const reqOne = (request.flags & NBD_CMD_FLAG_REQ_ONE) !== 0;
  const replies = await Promise.all(s.contexts.map(async (context) => ({ context, extents: await contextExtents(s.export, context, offset, length, reqOne) })));
  await c.send(
    replies.map(({ context, extents }, i) =>
      encodeBlockStatus(i === replies.length - 1 ? NBD_REPLY_FLAG_DONE : 0, cookie, context.id, extents),
    ),
  );
}
