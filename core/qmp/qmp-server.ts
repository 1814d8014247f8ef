/**
 * QMP over unix sockets and TCP, any number of listeners and clients. Each
 * connection is a QmpSession; replies and events are framed as QEMU frames
 * them (one JSON object per line, CRLF). A client that stops reading is
 * disconnected once its unsent output passes a bound, so a stuck peer cannot
 * make the daemon allocate without limit.
 */
import { lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import type { Readable, Writable } from 'node:stream';
import type { BlockLayerHooks } from '../hooks/block-layer-hooks.js';
import { formatQemuJson } from '../util/qemu-json.js';
import { Mutex } from '../util/mutex.js';
import type { CommandRegistry } from './command-registry.js';
import { QmpSession, type QmpVersion } from './qmp-session.js';
import { unixSocketPath } from '../util/unix-socket-path.js';

export type QmpAddress = { type: 'unix'; path: string } | { type: 'inet'; host: string; port: number };

export interface QmpServerOptions {
  /** Multi-line, indented JSON (a monitor's `pretty=on`). */
  pretty: boolean;
  /** Unsent bytes a client may accumulate before it is disconnected. */
  maxOutputBacklog: number;
  /** How long a closing server waits for clients to read what is left and hang up. */
  closeGraceMs: number;
}

const DEFAULT_OPTIONS: QmpServerOptions = { pretty: false, maxOutputBacklog: 64 * 1024 * 1024, closeGraceMs: 1000 };

export class QmpServer {
  private readonly listeners: net.Server[] = [];
  private readonly sockets = new Map<net.Socket, QmpSession>();
  /** One request at a time across all connections, as QEMU's monitor dispatcher. */
  private readonly dispatcher = new Mutex();
  private readonly streamSessions = new Set<QmpSession>();
  private readonly clientWaiters: (() => void)[] = [];
  private closed = false;
  private readonly options: QmpServerOptions;

  constructor(
    private readonly registry: CommandRegistry,
    private readonly hooks: BlockLayerHooks,
    private readonly version: QmpVersion,
    options: Partial<QmpServerOptions> = {},
  ) {
    this.options = { ...DEFAULT_OPTIONS, ...options };
    // tapable cannot untap; a closed server's tap simply does nothing.
    this.hooks.event.tap('QmpServer', (event) => {
      if (this.closed) return;
      for (const session of this.sockets.values()) session.deliver(event);
      for (const session of this.streamSessions) session.deliver(event);
    });
  }

  /** Starts listening; resolves with the bound address (TCP port 0 picks a free port). */
  async listen(address: QmpAddress): Promise<QmpAddress> {
    const server = net.createServer((socket) => this.accept(socket));
    if (address.type === 'unix') await removeStaleSocket(address.path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if (address.type === 'unix') server.listen(unixSocketPath(address.path), resolve);
      else server.listen(address.port, address.host, resolve);
    });
    this.listeners.push(server);
    const bound = server.address();
    if (address.type === 'inet' && bound !== null && typeof bound === 'object') {
      return { type: 'inet', host: address.host, port: bound.port };
    }
    return address;
  }


  /** Stops listening and ends every connection after its pending output is written. */
  async close(): Promise<void> {
    this.closed = true;
    for (const session of this.streamSessions) session.close();
    const ended = [...this.sockets.keys()].map(
      (socket) =>
        new Promise<void>((resolve) => {
          socket.once('close', () => resolve());
          socket.end();
          // A peer that never closes its side must not hold the shutdown.
          setTimeout(() => socket.destroy(), this.options.closeGraceMs).unref();
        }),
    );
    await Promise.all(this.listeners.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    await Promise.all(ended);
    this.listeners.length = 0;
  }

  /** Resolves once a client is connected (a chardev with `wait=on`). */
  waitForClient(): Promise<void> {
    if (this.sockets.size > 0) return Promise.resolve();
    return new Promise((resolve) => this.clientWaiters.push(resolve));
  }

  /** Serves one session over a pair of streams (a `stdio` chardev). */
  serveStreams(input: Readable, output: Writable): void {
    const session = new QmpSession(this.registry, this.dispatcher, {
      send: (message) => {
        if (!output.writableEnded) output.write(this.frame(message));
      },
      setReading: (reading) => {
        if (reading) input.resume();
        else input.pause();
      },
    });
    this.streamSessions.add(session);
    input.on('data', (chunk: Buffer) => session.receive(chunk));
    input.on('end', () => {
      session.close();
      this.streamSessions.delete(session);
    });
    session.greet(this.version);
  }

  /** One message as QEMU's monitor sends it: JSON, CRLF line ends. */
  private frame(message: Record<string, unknown>): string {
    const text = formatQemuJson(message, { pretty: this.options.pretty });
    return `${this.options.pretty ? text.replaceAll('\n', '\r\n') : text}\r\n`;
  }

  private accept(socket: net.Socket): void {
    const session = new QmpSession(this.registry, this.dispatcher, {
      send: (message) => {
        if (socket.destroyed) return;
        if (socket.writableLength > this.options.maxOutputBacklog) {
          socket.destroy(new Error('QMP client does not read its replies'));
          return;
        }
        socket.write(this.frame(message));
      },
      setReading: (reading) => {
        if (reading) socket.resume();
        else socket.pause();
      },
    });
    this.sockets.set(socket, session);
    socket.on('data', (chunk: Buffer) => session.receive(chunk));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      session.close();
      this.sockets.delete(socket);
    });
    session.greet(this.version);
    for (const waiter of this.clientWaiters.splice(0)) waiter();
  }
}

/** QEMU replaces an existing socket file when it starts listening; anything else at the path is an error. */
async function removeStaleSocket(path: string): Promise<void> {
  const stat = await lstat(path).catch(() => undefined);
  if (stat?.isSocket()) await unlink(path);
}
