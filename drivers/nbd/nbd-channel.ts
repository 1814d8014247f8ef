/**
 * A socket to an NBD server with a FrameReader on its incoming bytes: the
 * one place the client does network I/O. Reading pauses the socket while
 * too much is buffered; EPIPE/ECONNRESET end the reader instead of
 * escaping as unhandled errors. After NBD_OPT_STARTTLS the channel goes on
 * over TLS on the same socket (`startTls`).
 */
import { connect, type Socket } from 'node:net';
import { FrameReader, StreamEndedError } from '../../core/protocols/nbd/frame-reader.js';
import { NBD_MAX_PAYLOAD } from '../../core/protocols/nbd/constants.js';
import { clientTlsSocket, describeTlsError } from '../../core/protocols/nbd/tls.js';
import { NbdProtocolError } from '../../core/protocols/nbd/wire.js';
import type { TlsCreds } from '../../core/objects/user-object.js';
import { deferred } from '../../core/util/deferred.js';
import { BlockLayerError } from '../../core/errors.js';
import type { NbdServerAddress } from './options.js';
import { unixSocketPath } from '../../core/util/unix-socket-path.js';

/** The text QEMU prints for a failed connect (strerror), when Node gives a known code. */
const CONNECT_ERRORS: Record<string, string> = {
  ENOENT: 'No such file or directory',
  ECONNREFUSED: 'Connection refused',
  EACCES: 'Permission denied',
  ETIMEDOUT: 'Connection timed out',
  EHOSTUNREACH: 'No route to host',
  ENOTSOCK: 'Socket operation on non-socket',
  ENOTFOUND: 'Name or service not known',
};

export function describeAddress(server: NbdServerAddress): string {
  return server.type === 'unix' ? server.path : `${server.host}:${server.port}`;
}

export class NbdChannel {
  readonly reader: FrameReader;
  private readonly isClosed = deferred<void>();
  /** Resolves once the socket is fully closed. */
  readonly closed = this.isClosed.promise;
  /** The socket's listeners, removed while it is handed over to TLS. */
  private readonly listeners = {
    data: (chunk: Buffer) => this.reader.push(chunk),
    error: (error: Error) => {
      const text = this.tls ? describeTlsError(error) : error.message;
      this.reader.end(new StreamEndedError(`server connection failed: ${text}`));
    },
    close: () => {
      this.reader.end();
      this.isClosed.resolve();
    },
  };

  /** The TCP or Unix socket (under TLS once it has started). */
  private readonly plain: Socket;

  private constructor(private socket: Socket) {
    this.plain = socket;
    this.reader = new FrameReader({
      // A chunk header or an OFFSET_DATA offset may precede a full payload.
      maxRead: NBD_MAX_PAYLOAD,
      onFull: () => this.socket.pause(),
      onDrained: () => this.socket.resume(),
    });
    this.attach(socket);
  }

  /** Connects to `server`; a failure is worded as QEMU's: `Failed to connect to '/path': No such file or directory`. */
  static open(server: NbdServerAddress): Promise<NbdChannel> {
    return new Promise((resolve, reject) => {
      let socket: Socket;
      if (server.type === 'unix') {
        socket = connect({ path: unixSocketPath(server.path) });
      } else {
        const port = Number(server.port);
        if (!/^\d+$/.test(server.port) || port > 65535) {
          reject(new BlockLayerError(`Failed to connect to '${describeAddress(server)}': invalid port`));
          return;
        }
        socket = connect({ host: server.host, port, noDelay: true });
      }
      const onError = (error: NodeJS.ErrnoException) => {
        const text = CONNECT_ERRORS[error.code ?? ''] ?? error.message;
        reject(new BlockLayerError(`Failed to connect to '${describeAddress(server)}': ${text}`));
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        resolve(new NbdChannel(socket));
      });
    });
  }

  /** Whether the connection runs over TLS. */
  get tls(): boolean {
    return this.socket !== this.plain;
  }

  /**
   * Runs the TLS handshake once the server acknowledged NBD_OPT_STARTTLS;
   * everything after goes over TLS. On failure the connection is gone and
   * the error says why ("TLS handshake failed: …").
   */
  async startTls(creds: TlsCreds, hostname: string | undefined): Promise<void> {
    if (this.reader.buffered > 0) throw new NbdProtocolError('server sent data right after acknowledging STARTTLS');
    const plain = this.socket;
    this.detach(plain);
    try {
      this.attach(await clientTlsSocket(plain, creds, hostname));
    } catch (error) {
      this.reader.end(new StreamEndedError((error as Error).message));
      this.isClosed.resolve();
      throw error;
    }
  }

  /** Sends buffers back to back, as one write where possible. */
  send(...buffers: Buffer[]): void {
    if (this.socket.destroyed) return;
    this.socket.cork();
    for (const buf of buffers) this.socket.write(buf);
    this.socket.uncork();
  }

  /** Sends `last` (if any), half-closes, and waits up to `graceMs` for the server to close before dropping the socket. */
  async end(last?: Buffer, graceMs = 1000): Promise<void> {
    if (!this.socket.destroyed) {
      if (last === undefined) this.socket.end();
      else this.socket.end(last);
    }
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([this.closed, grace]);
    clearTimeout(timer);
    this.destroy();
    await this.closed;
  }

  destroy(): void {
    this.socket.destroy();
    if (this.socket !== this.plain) this.plain.destroy();
  }

  private attach(socket: Socket): void {
    this.socket = socket;
    socket.on('data', this.listeners.data);
    socket.on('error', this.listeners.error);
    socket.once('close', this.listeners.close);
  }

  private detach(socket: Socket): void {
    socket.off('data', this.listeners.data);
    socket.off('error', this.listeners.error);
    socket.off('close', this.listeners.close);
  }
}
