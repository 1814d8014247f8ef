/**
 * One negotiated NBD connection in its transmission phase: up to 16
 * requests in flight (as qemu), matched to their replies by cookie, in any
 * order, with structured chunks of different requests interleaved. Data
 * arrives straight in the caller's buffer. A server error fails only its
 * request; a protocol violation or a lost connection fails every request
 * in flight and ends the session.
 */
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_MAX_ERROR_CHUNK,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_SIZE,
} from '../../core/protocols/nbd/constants.js';
import { errnoFromNbd } from '../../core/protocols/nbd/errno.js';
import {
  type ChunkHeader,
  decodeErrorChunk,
  decodeExtents,
  decodeOffset,
  decodeOffsetHole,
  decodeReplyHeader,
  encodeRequest,
  isErrorChunk,
  type NbdExtent,
  replyHeaderSize,
} from '../../core/protocols/nbd/transmission.js';
import { NbdProtocolError } from '../../core/protocols/nbd/wire.js';
import { BlockIoError } from '../../core/errors.js';
import type { NbdChannel } from './nbd-channel.js';
import type { NbdExportInfo } from './nbd-handshake.js';

const MAX_IN_FLIGHT = 16;
/** Extents kept from one BLOCK_STATUS chunk; the rest is skipped (the node asks again from where they end). */
const MAX_EXTENTS = 4096;

/** The connection ended (`fatal`: by a protocol violation, so it must not be retried). */
export class ConnectionLostError extends Error {
  constructor(
    message: string,
    readonly fatal: boolean,
  ) {
    super(message);
    this.name = 'ConnectionLostError';
  }
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  /** READ: where the data goes. */
  buf: Buffer | undefined;
  /** READ: bytes of data and holes received. */
  covered: number;
  /** BLOCK_STATUS: the extents of our context. */
  extents: NbdExtent[] | undefined;
  /** The first error the server reported for the request. */
  error: BlockIoError | undefined;
  resolve(): void;
  reject(error: Error): void;
}

export class NbdSession {
  private readonly inFlight = new Map<bigint, Pending>();
  private readonly slotWaiters: { resolve(): void; reject(error: Error): void }[] = [];
  private nextCookie = 1n;
  /** Requests holding a slot. */
  private active = 0;
  private lost: ConnectionLostError | undefined;
  private disconnecting = false;

  constructor(
    private readonly channel: NbdChannel,
    readonly info: NbdExportInfo,
    private readonly onLost: (session: NbdSession, error: ConnectionLostError) => void,
  ) {
    void this.receive();
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    await this.request(NBD_CMD_READ, 0, offset, buf.length, buf);
  }

  async write(offset: number, buf: Buffer, flags: number): Promise<void> {
    await this.request(NBD_CMD_WRITE, flags, offset, buf.length, undefined, buf);
  }

  /** FLUSH, TRIM, WRITE_ZEROES: commands whose reply carries no payload. */
  async command(type: number, flags: number, offset: number, length: number): Promise<void> {
    await this.request(type, flags, offset, length);
  }

  /** Extents of the negotiated context from `offset` on (at least one). */
  async blockStatus(offset: number, length: number): Promise<NbdExtent[]> {
    return (await this.request(NBD_CMD_BLOCK_STATUS, 0, offset, length)).extents!;
  }

  /** NBD_CMD_DISC (no reply), then closes the socket. */
  async disconnect(): Promise<void> {
    if (this.lost !== undefined) return;
    this.disconnecting = true;
    this.fail(new ConnectionLostError('NBD client closed', true), false);
    await this.channel.end(encodeRequest({ flags: 0, type: NBD_CMD_DISC, cookie: 0n, offset: 0, length: 0 }));
  }

  private async request(type: number, flags: number, offset: number, length: number, buf?: Buffer, payload?: Buffer): Promise<Pending> {
    await this.slot();
    const cookie = this.nextCookie++;
    return new Promise<Pending>((resolve, reject) => {
      if (this.lost !== undefined) {
        reject(this.lost);
        return;
      }
      const pending: Pending = {
        type,
        offset,
        length,
        buf,
        covered: 0,
        extents: undefined,
        error: undefined,
        resolve: () => resolve(pending),
        reject,
      };
      this.inFlight.set(cookie, pending);
      const header = encodeRequest({ flags, type, cookie, offset, length });
      if (payload === undefined) this.channel.send(header);
      else this.channel.send(header, payload);
    }).finally(() => this.releaseSlot());
  }

  /** Waits for one of the MAX_IN_FLIGHT slots (handed on in call order). */
  private slot(): Promise<void> {
    if (this.lost !== undefined) return Promise.reject(this.lost);
    if (this.active < MAX_IN_FLIGHT) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.slotWaiters.push({ resolve, reject }));
  }

  private releaseSlot(): void {
    const next = this.slotWaiters.shift();
    if (next === undefined) this.active--;
    else next.resolve();
  }

  /** The reply loop: one header at a time, its payload read before the next. */
  private async receive(): Promise<void> {
    const { reader } = this.channel;
    try {
      for (;;) {
        const head = await reader.read(NBD_SIMPLE_REPLY_SIZE);
        const size = replyHeaderSize(head);
        const header = decodeReplyHeader(size === head.length ? head : Buffer.concat([head, await reader.read(size - head.length)]));
        const pending = this.inFlight.get(header.cookie);
        if (pending === undefined) throw new NbdProtocolError(`unexpected cookie value ${header.cookie}`);
        if (header.kind === 'simple') await this.simpleReply(header.cookie, pending, header.error);
        else await this.chunk(header.cookie, pending, header);
      }
    } catch (error) {
      const fatal = error instanceof NbdProtocolError || error instanceof RangeError;
      const message = fatal ? `NBD protocol error: ${(error as Error).message}` : (error as Error).message;
      this.fail(new ConnectionLostError(message, fatal), true);
    }
  }

  private async simpleReply(cookie: bigint, pending: Pending, error: number): Promise<void> {
    if (error !== 0) return this.finish(cookie, pending, new BlockIoError(errnoFromNbd(error)));
    if (pending.type === NBD_CMD_READ) {
      if (this.info.structured) throw new NbdProtocolError('simple reply when structured reply chunk was expected');
      await this.channel.reader.readInto(pending.buf!);
      pending.covered = pending.length;
    } else if (pending.type === NBD_CMD_BLOCK_STATUS) {
      throw new NbdProtocolError('simple reply to NBD_CMD_BLOCK_STATUS');
    }
    this.finish(cookie, pending);
  }

  private async chunk(cookie: bigint, pending: Pending, header: ChunkHeader): Promise<void> {
    if (!this.info.structured) throw new NbdProtocolError('unexpected structured reply');
    const { reader } = this.channel;
    const { type, length } = header;
    const done = (header.flags & NBD_REPLY_FLAG_DONE) !== 0;
    const expect = (command: number) => {
      if (pending.type !== command) throw new NbdProtocolError(`unexpected reply type ${type} for command ${pending.type}`);
    };
    if (type === NBD_REPLY_TYPE_NONE) {
      if (!done || length !== 0) throw new NbdProtocolError('NBD_REPLY_TYPE_NONE chunk without DONE or with a payload');
    } else if (type === NBD_REPLY_TYPE_OFFSET_DATA) {
      expect(NBD_CMD_READ);
      if (length <= 8) throw new NbdProtocolError('invalid payload for NBD_REPLY_TYPE_OFFSET_DATA');
      if (length - 8 > pending.length) throw new NbdProtocolError('server sent chunk exceeding requested region');
      const at = this.within(pending, decodeOffset(await reader.read(8)), length - 8);
      await reader.readInto(pending.buf!.subarray(at, at + length - 8));
      pending.covered += length - 8;
    } else if (type === NBD_REPLY_TYPE_OFFSET_HOLE) {
      expect(NBD_CMD_READ);
      if (length !== 12) throw new NbdProtocolError('invalid payload for NBD_REPLY_TYPE_OFFSET_HOLE');
      const hole = decodeOffsetHole(await reader.read(12));
      const at = this.within(pending, hole.offset, hole.length);
      pending.buf!.fill(0, at, at + hole.length);
      pending.covered += hole.length;
    } else if (type === NBD_REPLY_TYPE_BLOCK_STATUS) {
      expect(NBD_CMD_BLOCK_STATUS);
      await this.statusChunk(pending, length);
    } else if (isErrorChunk(type)) {
      if (length > NBD_MAX_ERROR_CHUNK) throw new NbdProtocolError(`error chunk of ${length} bytes is too long`);
      const payload = await reader.read(length);
      const known = type === NBD_REPLY_TYPE_ERROR || type === NBD_REPLY_TYPE_ERROR_OFFSET;
      // The spec: an unknown error chunk fails its request only; an unknown error value means EINVAL.
      pending.error ??= new BlockIoError(known ? errnoFromNbd(decodeErrorChunk(type, payload).error) : 'EINVAL');
    } else {
      throw new NbdProtocolError(`unknown reply chunk type ${type}`);
    }
    if (done) this.finish(cookie, pending);
  }

  /** The index in the read buffer of `[offset, offset + length)`, which must lie inside the request. */
  private within(pending: Pending, offset: number, length: number): number {
    if (offset < pending.offset || offset + length > pending.offset + pending.length) {
      throw new NbdProtocolError('server sent chunk exceeding requested region');
    }
    return offset - pending.offset;
  }

  /** One context's extents; other contexts and extents past MAX_EXTENTS are skipped without being kept. */
  private async statusChunk(pending: Pending, length: number): Promise<void> {
    const { reader } = this.channel;
    if (length < 12 || (length - 4) % 8 !== 0) throw new NbdProtocolError('invalid payload for NBD_REPLY_TYPE_BLOCK_STATUS');
    const contextId = (await reader.read(4)).readUInt32BE(0);
    if (contextId !== this.info.contextId || pending.extents !== undefined) {
      await reader.skip(length - 4);
      return;
    }
    const count = (length - 4) / 8;
    const kept = Math.min(count, MAX_EXTENTS);
    pending.extents = decodeExtents(await reader.read(8 * kept));
    await reader.skip(8 * (count - kept));
  }

  private finish(cookie: bigint, pending: Pending, error = pending.error): void {
    this.inFlight.delete(cookie);
    if (error !== undefined) {
      pending.reject(error);
    } else if (pending.type === NBD_CMD_READ && pending.covered !== pending.length) {
      pending.reject(new BlockIoError('EIO', `NBD server replied to a read of ${pending.length} bytes with ${pending.covered}`));
    } else if (pending.type === NBD_CMD_BLOCK_STATUS && pending.extents === undefined) {
      pending.reject(new BlockIoError('EIO', 'Server did not reply with any status extents'));
    } else {
      pending.resolve();
    }
  }

  /** Ends the session: every request in flight or waiting fails with `error`. */
  private fail(error: ConnectionLostError, notify: boolean): void {
    if (this.lost !== undefined) return;
    this.lost = error;
    for (const pending of this.inFlight.values()) pending.reject(error);
    this.inFlight.clear();
    for (const waiter of this.slotWaiters.splice(0)) waiter.reject(error);
    if (!this.disconnecting) this.channel.destroy();
    if (notify && !this.disconnecting) this.onLost(this, error);
  }
}
