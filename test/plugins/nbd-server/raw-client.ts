/**
 * A raw NBD client for tests of our server: it speaks the wire format byte
 * by byte (core/protocols/nbd) and can send anything, well-formed or not,
 * then read back exactly what the server answered.
 */
import net from 'node:net';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REPLY_FLAG_DONE,
} from '../../../core/protocols/nbd/constants.js';
import { FrameReader } from '../../../core/protocols/nbd/frame-reader.js';
import {
  decodeInfoReply,
  decodeMetaContextReply,
  decodeOptionReplyHeader,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
} from '../../../core/protocols/nbd/handshake.js';
import { decodeReplyHeader, encodeRequest, type NbdRequest } from '../../../core/protocols/nbd/transmission.js';

export interface OptionReply {
  option: number;
  type: number;
  payload: Buffer;
}

export interface Chunk {
  flags: number;
  type: number;
  payload: Buffer;
}

/** A whole reply: a simple one (error, data) or the chunks of a structured one. */
export type Reply = { kind: 'simple'; cookie: bigint; error: number; data?: Buffer } | { kind: 'structured'; cookie: bigint; chunks: Chunk[] };

export class RawNbdClient {
  readonly reader = new FrameReader({ maxRead: 64 * 1024 * 1024 });
  readonly closed: Promise<void>;
  private cookie = 0n;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.reader.push(chunk));
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    void this.closed.then(() => this.reader.end());
  }

  static async connect(path: string): Promise<RawNbdClient> {
    const socket = net.connect(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawNbdClient(socket);
  }

  send(...buffers: Buffer[]): void {
    for (const buf of buffers) this.socket.write(buf);
  }

  /** Reads the 18-byte greeting and answers with client flags (fixed newstyle and no zeroes unless told otherwise). */
  async greet(clientFlags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES): Promise<Buffer> {
    const greeting = await this.reader.read(18);
    this.send(encodeClientFlags(clientFlags));
    return greeting;
  }

  async optionReply(): Promise<OptionReply> {
    const header = decodeOptionReplyHeader(await this.reader.read(20));
    return { option: header.option, type: header.type, payload: await this.reader.read(header.length) };
  }

  /** Sends an option and reads its replies up to the final one (ACK or an error). */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.send(encodeOption(option, data));
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.optionReply();
      replies.push(reply);
      if (reply.type === NBD_REP_ACK || (reply.type & 0x80000000) !== 0) return replies;
    }
  }

  /** The usual handshake: structured replies, meta contexts, GO; size, flags and the context ids by name. */
  async handshake(exportName: string, contexts: string[] = [], structured = true): Promise<{ size: number; flags: number; contexts: Map<string, number> }> {
    await this.greet();
    if (structured) await this.option(NBD_OPT_STRUCTURED_REPLY);
    const ids = new Map<string, number>();
    if (contexts.length > 0) {
      for (const reply of await this.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest(exportName, contexts))) {
        if (reply.type === NBD_REP_META_CONTEXT) {
          const { id, name } = decodeMetaContextReply(reply.payload);
          ids.set(name, id);
        }
      }
    }
    let size = -1;
    let flags = -1;
    for (const reply of await this.option(NBD_OPT_GO, encodeInfoRequest(exportName, [NBD_INFO_BLOCK_SIZE]))) {
      if (reply.type === NBD_REP_INFO) {
        const info = decodeInfoReply(reply.payload);
        if (info.info === 'export') ({ size, flags } = info);
      } else if (reply.type !== NBD_REP_ACK) {
        throw new Error(`GO refused: 0x${reply.type.toString(16)} ${reply.payload.toString()}`);
      }
    }
    return { size, flags, contexts: ids };
  }

  /** Sends a request (with its payload); returns its cookie. */
  request(request: Partial<NbdRequest> & { type: number }, payload?: Buffer): bigint {
    const cookie = request.cookie ?? ++this.cookie;
    this.send(encodeRequest({ flags: 0, offset: 0, length: payload?.length ?? 0, ...request, cookie }));
    if (payload !== undefined) this.send(payload);
    return cookie;
  }

  /**
   * Reads one whole reply. A simple reply to a READ is followed by
   * `readLength` bytes of data when it succeeded (the client must know).
   */
  async reply(readLength = 0): Promise<Reply> {
    const magic = await this.reader.read(4);
    const size = magic.readUInt32BE(0) === 0x67446698 ? 16 : 20;
    const header = decodeReplyHeader(Buffer.concat([magic, await this.reader.read(size - 4)]));
    if (header.kind === 'simple') {
      const data = header.error === 0 && readLength > 0 ? await this.reader.read(readLength) : undefined;
      return { kind: 'simple', cookie: header.cookie, error: header.error, ...(data === undefined ? {} : { data }) };
    }
    const chunks: Chunk[] = [{ flags: header.flags, type: header.type, payload: await this.reader.read(header.length) }];
    // Chunks of one request arrive together here: the server writes a reply in one go.
    while ((chunks[chunks.length - 1]!.flags & NBD_REPLY_FLAG_DONE) === 0) {
      const next = decodeReplyHeader(await this.reader.read(20));
      if (next.kind !== 'chunk' || next.cookie !== header.cookie) throw new Error('interleaved reply');
      chunks.push({ flags: next.flags, type: next.type, payload: await this.reader.read(next.length) });
    }
    return { kind: 'structured', cookie: header.cookie, chunks };
  }

  /** The error value of a reply: a simple reply's, or the first error chunk's (0 if none). */
  static errorOf(reply: Reply): number {
    if (reply.kind === 'simple') return reply.error;
    const chunk = reply.chunks.find((c) => (c.type & 0x8000) !== 0);
    return chunk === undefined ? 0 : chunk.payload.readUInt32BE(0);
  }

  /** The message of a reply's error chunk. */
  static messageOf(reply: Reply): string {
    if (reply.kind === 'simple') return '';
    const chunk = reply.chunks.find((c) => (c.type & 0x8000) !== 0);
    return chunk === undefined ? '' : chunk.payload.subarray(6, 6 + chunk.payload.readUInt16BE(4)).toString();
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}
