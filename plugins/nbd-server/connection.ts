/**
 * One client connection: the socket, the bounded reader over it, the
 * writer that keeps replies whole on the wire, and the two phases
 * (handshake.ts, then transmission.ts). Whatever the client does — a bad
 * magic, garbage, a disconnect in the middle of a request — ends only this
 * connection: every failure is caught here, requests still in flight
 * finish (their replies are dropped), and `close()` resolves once they
 * have.
 */
import type net from 'node:net';
import { FrameReader } from '../../core/protocols/nbd/frame-reader.js';
import { NBD_MAX_PAYLOAD } from '../../core/protocols/nbd/constants.js';
import type { TlsCreds } from '../../core/objects/user-object.js';
import { deferred } from '../../core/util/deferred.js';
import type { ExportClient, NbdExport } from './nbd-export.js';

/** What a connection needs from the server. */
export interface ConnectionHost {
  /** The export a client names, if there is one it may use. */
  findExport(name: string): NbdExport | undefined;
  /** The exports NBD_OPT_LIST shows, oldest first. */
  listExports(): NbdExport[];
  /** Credentials when the server requires TLS. */
  readonly tlsCreds: TlsCreds | undefined;
  /** Wraps the socket in TLS after STARTTLS (server side); rejects if the TLS handshake fails. */
  startTls(socket: net.Socket, creds: TlsCreds): Promise<net.Socket>;
  /** Time a client has to finish the handshake before it is disconnected. */
  readonly handshakeLimitMs: number;
}

/** Requests read ahead and being served at once on one connection (qemu's MAX_NBD_REQUESTS). */
export const MAX_REQUESTS_IN_FLIGHT = 16;

export class NbdConnection implements ExportClient {
  private socket: net.Socket;
  private frames!: FrameReader;
  private readonly inFlight = new Set<Promise<void>>();
  private slotFreed: (() => void) | undefined;
  /** Replies being written; settled when written or when the socket closes. */
  private readonly unwritten = new Set<() => void>();
  private readonly done = deferred<void>();
  private ended = false;

  constructor(
    socket: net.Socket,
    readonly host: ConnectionHost,
  ) {
    this.socket = socket;
    this.attach(socket);
  }

  get reader(): FrameReader {
    return this.frames;
  }

  get open(): boolean {
    return !this.ended && !this.socket.destroyed;
  }

  /**
   * Runs the connection to its end: `phases` negotiates and then serves
   * requests. Never rejects; resolves when the socket is closed and no
   * request is in flight.
   */
  async run(phases: (connection: NbdConnection) => Promise<void>): Promise<void> {
    try {
      await phases(this);
    } catch {
      // A protocol violation, the client going away, or a failed TLS handshake: this connection ends.
    }
    this.destroy();
    await Promise.all(this.inFlight);
    this.done.resolve();
  }

  /** Disconnects; resolves once requests in flight have finished. */
  close(): Promise<void> {
    this.destroy();
    return this.done.promise;
  }

  /** Hard disconnect (a protocol violation, shutdown, a handshake too slow). */
  destroy(): void {
    if (this.ended) return;
    this.ended = true;
    this.socket.destroy();
    this.frames.end();
  }

  /**
   * Writes one reply (its header and payload pieces) in one go, so replies
   * of concurrent requests never interleave. Resolves once the bytes are
   * handed to the kernel, or at once if the connection is gone.
   */
  send(buffers: readonly Buffer[]): Promise<void> {
    const socket = this.socket;
    if (!this.open || buffers.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const settle = (): void => {
        if (this.unwritten.delete(settle)) resolve();
      };
      this.unwritten.add(settle);
      socket.cork();
      buffers.forEach((buf, i) => socket.write(buf, i === buffers.length - 1 ? settle : undefined));
      socket.uncork();
    });
  }

  /** Resolves when another request may be read (fewer than MAX_REQUESTS_IN_FLIGHT being served). */
  async requestSlot(): Promise<void> {
    while (this.inFlight.size >= MAX_REQUESTS_IN_FLIGHT) {
      await new Promise<void>((resolve) => (this.slotFreed = resolve));
    }
  }

  /** Serves a request in the background; it never rejects (the handler answers errors itself). */
  track(task: Promise<void>): void {
    const settled: Promise<void> = task
      .catch(() => undefined)
      .finally(() => {
        this.inFlight.delete(settled);
        const wake = this.slotFreed;
        this.slotFreed = undefined;
        wake?.();
      });
    this.inFlight.add(settled);
  }

  /** Resolves once every request being served has been answered (NBD_CMD_DISC). */
  async drainRequests(): Promise<void> {
    await Promise.all(this.inFlight);
  }

  /** STARTTLS: the plain socket becomes a TLS one; negotiation continues over it. */
  async upgradeTls(creds: TlsCreds): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('end');
    const secure = await this.host.startTls(plain, creds);
    this.socket = secure;
    this.attach(secure);
    if (this.ended) secure.destroy();
  }

  private attach(socket: net.Socket): void {
    this.frames = new FrameReader({
      maxRead: NBD_MAX_PAYLOAD,
      onFull: () => socket.pause(),
      onDrained: () => socket.resume(),
    });
    const frames = this.frames;
    socket.on('data', (chunk: Buffer) => frames.push(chunk));
    socket.on('end', () => frames.end());
    socket.on('close', () => {
      frames.end();
      this.ended = true;
      for (const settle of [...this.unwritten]) settle();
    });
    socket.on('error', () => socket.destroy());
  }
}
