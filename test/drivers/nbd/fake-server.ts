/**
 * A tiny NBD server for tests of the client, built on the shared wire
 * format (core/protocols/nbd): it can leave out GO, structured replies or
 * meta contexts, and a test can answer any request itself to send odd,
 * late or hostile replies.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_MAX_OPTION_DATA,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REPLY_FLAG_DONE,
} from '../../../core/protocols/nbd/constants.js';
import { FrameReader } from '../../../core/protocols/nbd/frame-reader.js';
import {
  type BlockSizeInfo,
  decodeClientFlags,
  decodeMetaContextRequest,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoReply,
  encodeMetaContextReply,
  encodeOptionReply,
} from '../../../core/protocols/nbd/handshake.js';
import {
  decodeRequest,
  encodeBlockStatus,
  encodeOffsetDataHeader,
  encodeSimpleReply,
  type NbdRequest,
} from '../../../core/protocols/nbd/transmission.js';

export interface FakeServerOptions {
  size: number;
  /** Listen on 127.0.0.1 (an ephemeral port) instead of a Unix socket. */
  tcp?: boolean;
  handshakeFlags?: number;
  transmissionFlags?: number;
  go?: boolean;
  /** Refuse GO with this error reply and text (the client may go on negotiating). */
  goError?: { type: number; message: string };
  structured?: boolean;
  metaContext?: boolean;
  blockSize?: BlockSizeInfo;
  /** Answers a request itself (true) or leaves it to the default handling (false). */
  onRequest?(request: NbdRequest, connection: FakeConnection, payload: Buffer | undefined): boolean | Promise<boolean>;
}

export interface FakeConnection {
  structured: boolean;
  send(...buffers: Buffer[]): void;
  /** The default answer to `request` (data from the server's buffer). */
  serve(request: NbdRequest, payload: Buffer | undefined): void;
  destroy(): void;
}

/** The context id the fake server gives base:allocation (qemu uses 0, nbdkit 1). */
export const FAKE_CONTEXT_ID = 7;

export class FakeNbdServer {
  readonly data: Buffer;
  readonly socket: string;
  /** Options received, in order, across connections. */
  readonly options: number[] = [];
  readonly requests: NbdRequest[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly handled: Promise<void>[] = [];

  private constructor(
    private readonly server: Server,
    dir: string,
    private readonly opts: FakeServerOptions,
  ) {
    this.data = Buffer.alloc(opts.size);
    this.socket = join(dir, 'fake.sock');
  }

  static async start(dir: string, opts: FakeServerOptions): Promise<FakeNbdServer> {
    const server = createServer();
    const fake = new FakeNbdServer(server, dir, opts);
    server.on('connection', (socket) => fake.handled.push(fake.handle(socket)));
    await new Promise<void>((resolve) => (opts.tcp ? server.listen(0, '127.0.0.1', resolve) : server.listen(fake.socket, resolve)));
    return fake;
  }

  get address(): { type: 'unix'; path: string } | { type: 'inet'; host: string; port: string } {
    const address = this.server.address();
    if (typeof address === 'object' && address !== null) return { type: 'inet', host: address.address, port: String(address.port) };
    return { type: 'unix', path: this.socket };
  }

  /** Resolves once every connection so far has ended. */
  async settled(): Promise<void> {
    await Promise.all(this.handled);
  }

  /** Drops every connection (the server keeps listening). */
  dropConnections(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  async close(): Promise<void> {
    this.dropConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private async handle(socket: Socket): Promise<void> {
    this.sockets.add(socket);
    const reader = new FrameReader();
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('close', () => {
      reader.end();
      this.sockets.delete(socket);
    });
    socket.on('error', () => undefined);
    const connection: FakeConnection = {
      structured: false,
      send: (...buffers) => {
        if (!socket.destroyed) for (const buf of buffers) socket.write(buf);
      },
      serve: (request, payload) => this.serve(connection, request, payload),
      destroy: () => socket.destroy(),
    };
    try {
      if (await this.negotiate(reader, connection)) await this.transmit(reader, connection);
    } catch {
      // The client went away.
    }
    socket.destroy();
  }

  private get flags(): number {
    return this.opts.transmissionFlags ?? NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_WRITE_ZEROES;
  }

  /** True once transmission starts. */
  private async negotiate(reader: FrameReader, c: FakeConnection): Promise<boolean> {
    const { go = true, structured = true, metaContext = true } = this.opts;
    c.send(encodeGreeting(this.opts.handshakeFlags ?? NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
    const clientFlags = decodeClientFlags(await reader.read(4));
    for (;;) {
      const { option, length } = decodeOptionHeader(await reader.read(16));
      if (length > NBD_MAX_OPTION_DATA) return false;
      const data = await reader.read(length);
      this.options.push(option);
      const reply = (type: number, payload?: Buffer) => c.send(encodeOptionReply(option, type, payload));
      if (option === NBD_OPT_EXPORT_NAME) {
        c.send(encodeExportNameReply({ size: this.opts.size, flags: this.flags }, (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0));
        return true;
      } else if (option === NBD_OPT_STRUCTURED_REPLY && structured) {
        c.structured = true;
        reply(NBD_REP_ACK);
      } else if (option === NBD_OPT_SET_META_CONTEXT && metaContext && c.structured) {
        for (const query of decodeMetaContextRequest(data).queries) {
          if (query === 'base:allocation') reply(NBD_REP_META_CONTEXT, encodeMetaContextReply(FAKE_CONTEXT_ID, query));
        }
        reply(NBD_REP_ACK);
      } else if (option === NBD_OPT_GO && this.opts.goError !== undefined) {
        reply(this.opts.goError.type, Buffer.from(this.opts.goError.message));
      } else if (option === NBD_OPT_GO && go) {
        if (this.opts.blockSize !== undefined) reply(NBD_REP_INFO, encodeInfoReply({ info: 'block-size', ...this.opts.blockSize }));
        reply(NBD_REP_INFO, encodeInfoReply({ info: 'export', size: this.opts.size, flags: this.flags }));
        reply(NBD_REP_ACK);
        return true;
      } else if (option === NBD_OPT_ABORT) {
        reply(NBD_REP_ACK);
        return false;
      } else {
        reply(NBD_REP_ERR_UNSUP);
      }
    }
  }

  private async transmit(reader: FrameReader, c: FakeConnection): Promise<void> {
    for (;;) {
      const request = decodeRequest(await reader.read(28));
      this.requests.push(request);
      if (request.type === NBD_CMD_DISC) return;
      const payload = request.type === NBD_CMD_WRITE ? await reader.read(request.length) : undefined;
      if (!(await this.opts.onRequest?.(request, c, payload))) this.serve(c, request, payload);
    }
  }

  private serve(c: FakeConnection, request: NbdRequest, payload: Buffer | undefined): void {
    const { type, cookie, offset, length } = request;
    if (type === NBD_CMD_READ) {
      const data = this.data.subarray(offset, offset + length);
      if (c.structured) c.send(encodeOffsetDataHeader(NBD_REPLY_FLAG_DONE, cookie, offset, length), data);
      else c.send(encodeSimpleReply(0, cookie), data);
      return;
    }
    if (type === NBD_CMD_WRITE) payload!.copy(this.data, offset);
    if (type === NBD_CMD_WRITE_ZEROES) this.data.fill(0, offset, offset + length);
    if (type === NBD_CMD_BLOCK_STATUS) {
      c.send(encodeBlockStatus(NBD_REPLY_FLAG_DONE, cookie, FAKE_CONTEXT_ID, [{ length, flags: 0 }]));
      return;
    }
    c.send(encodeSimpleReply(0, cookie));
  }
}
