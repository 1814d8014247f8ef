/**
 * The NBD server's listening socket: binds a Unix or TCP address with
 * QEMU's error texts, and admits clients up to `max-connections` at once.
 * As in QEMU, which stops accepting while at the limit, a client past the
 * limit is not refused: it waits, connected but without a greeting, until
 * one leaves (up to a small queue, like a listen backlog; beyond it the
 * connection is closed).
 */
import { lookup } from 'node:dns/promises';
import { lstat, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import { dirname } from 'node:path';
import { BlockLayerError, type Errno, strerror } from '../../core/errors.js';
import { unixSocketPath } from '../../core/util/unix-socket-path.js';

/** Where to listen, resolved from either address form. */
export type ListenAddress =
  | { type: 'unix'; path: string; abstract: boolean }
  | { type: 'inet'; host: string; port: string; keepAlive: boolean };

/** Clients waiting for a free slot beyond this many are disconnected. */
const MAX_WAITING = 32;

export class NbdListener {
  private readonly waiting: net.Socket[] = [];
  private admitted = 0;
  private closed = false;

  private constructor(
    private readonly server: net.Server,
    readonly address: ListenAddress,
    private readonly maxConnections: number,
    private readonly serve: (socket: net.Socket, release: () => void) => void,
  ) {
    server.on('connection', (socket) => this.accept(socket));
  }

  /**
   * Binds `address`; `serve` gets each admitted client and a `release` to
   * call once when that client is gone (which admits a waiting one).
   */
  static async listen(
    address: ListenAddress,
    maxConnections: number,
    serve: (socket: net.Socket, release: () => void) => void,
  ): Promise<NbdListener> {
    const server = net.createServer({ noDelay: true });
    const listener = new NbdListener(server, address, maxConnections, serve);
    if (address.type === 'unix') await bindUnix(server, address);
    else await bindInet(server, address);
    return listener;
  }

  /** The TCP port bound (useful when "0" asked for any free port). */
  get port(): number | undefined {
    const bound = this.server.address();
    return typeof bound === 'object' && bound !== null ? bound.port : undefined;
  }

  /** Stops listening, drops waiting clients and removes the socket file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const socket of this.waiting.splice(0)) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.address.type === 'unix' && !this.address.abstract) await rm(this.address.path, { force: true });
  }

  private accept(socket: net.Socket): void {
    socket.on('error', () => socket.destroy());
    if (this.closed) {
      socket.destroy();
      return;
    }
    if (this.address.type === 'inet' && this.address.keepAlive) socket.setKeepAlive(true);
    if (this.maxConnections > 0 && this.admitted >= this.maxConnections) {
      if (this.waiting.length >= MAX_WAITING) {
        socket.destroy();
        return;
      }
      socket.pause();
      this.waiting.push(socket);
      socket.once('close', () => {
        const index = this.waiting.indexOf(socket);
        if (index >= 0) this.waiting.splice(index, 1);
      });
      return;
    }
    this.admit(socket);
  }

  private admit(socket: net.Socket): void {
    this.admitted++;
    let released = false;
    this.serve(socket, () => {
      if (released) return;
      released = true;
      this.admitted--;
      const next = this.waiting.shift();
      if (next !== undefined && !this.closed) this.admit(next);
    });
  }
}

async function bindUnix(server: net.Server, address: Extract<ListenAddress, { type: 'unix' }>): Promise<void> {
  const path = address.abstract ? `\0${address.path}` : address.path;
  if (!address.abstract) {
    // QEMU replaces a stale socket; a file of another kind is left alone and the bind fails.
    const stat = await lstat(path).catch(() => undefined);
    if (stat?.isSocket()) await rm(path, { force: true });
  }
  // libuv reports EACCES for a missing directory; say what bind(2) says, as QEMU does.
  const parent = address.abstract ? undefined : await stat(dirname(path)).catch((error: NodeJS.ErrnoException) => error);
  const reason = parent instanceof Error ? parent : parent?.isDirectory() === false ? Object.assign(new Error(), { code: 'ENOTDIR' }) : undefined;
  if (reason !== undefined) throw new BlockLayerError(`Failed to bind socket to ${address.path}: ${errnoText(reason)}`);
  await bind(server, { path: unixSocketPath(path) }, (error) => `Failed to bind socket to ${address.path}: ${errnoText(error)}`);
}

async function bindInet(server: net.Server, address: Extract<ListenAddress, { type: 'inet' }>): Promise<void> {
  const where = `${address.host}:${address.port}`;
  if (!/^\d+$/.test(address.port) || Number(address.port) > 65535) {
    throw new BlockLayerError(`address resolution failed for ${where}: Servname not supported for ai_socktype`);
  }
  const resolved = await lookup(address.host).catch((error: NodeJS.ErrnoException) => {
    const reason = error.code === 'EAI_AGAIN' ? 'Temporary failure in name resolution' : 'Name or service not known';
    throw new BlockLayerError(`address resolution failed for ${where}: ${reason}`);
  });
  await bind(server, { host: resolved.address, port: Number(address.port) }, (error) =>
    error.code === 'EADDRINUSE' ? 'Failed to find an available port: Address already in use' : `Failed to bind socket: ${errnoText(error)}`,
  );
}

function bind(server: net.Server, options: net.ListenOptions, message: (error: NodeJS.ErrnoException) => string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => reject(new BlockLayerError(message(error)));
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function errnoText(error: NodeJS.ErrnoException): string {
  const code = error.code ?? '';
  if (code === 'EADDRINUSE') return 'Address already in use';
  if (code === 'ENOTDIR') return 'Not a directory';
  if (code in { EACCES: 1, ENOENT: 1, EROFS: 1, EPERM: 1, EINVAL: 1 }) return strerror(code as Errno);
  return error.message;
}
