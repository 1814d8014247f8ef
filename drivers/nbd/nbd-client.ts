/**
 * The connection behind an nbd node, kept alive as QEMU's block/nbd.c does:
 * open tries for up to `open-timeout` seconds; when an established
 * connection is lost, requests wait up to `reconnect-delay` seconds for a
 * new one (those in flight are sent again), then fail with EIO, while
 * reconnection goes on in the background (every 100 ms at first, backing
 * off to every 2 s) until it succeeds or the node closes. A protocol
 * violation is not retried: the node's requests fail from then on.
 */
import { BlockIoError, BlockLayerError } from '../../core/errors.js';
import { deferred, type Deferred } from '../../core/util/deferred.js';
import { describeAddress, NbdChannel } from './nbd-channel.js';
import { type HandshakeParams, negotiate, type NbdExportInfo } from './nbd-handshake.js';
import { ConnectionLostError, NbdSession } from './nbd-session.js';
import type { NbdServerAddress } from './options.js';

const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 2000;

export interface NbdClientParams {
  server: NbdServerAddress;
  handshake: HandshakeParams;
  /** Seconds requests wait for a reconnect. */
  reconnectDelay: number;
  /** Seconds open keeps trying. */
  openTimeout: number;
  /** Why a reconnection's export cannot stand in for the first one; undefined if it can. */
  compatible(info: NbdExportInfo): string | undefined;
}

type State = 'connected' | 'connecting' | 'failed' | 'closed';

export class NbdClient {
  private state: State = 'connecting';
  private session: NbdSession | undefined;
  /** Why the connection is down (state connecting or failed). */
  private reason = '';
  /** Until when requests wait for a reconnect (ms since the epoch). */
  private waitUntil = 0;
  private waiters: Deferred<NbdSession>[] = [];
  private deadlineTimer: NodeJS.Timeout | undefined;
  private retry: { timer: NodeJS.Timeout; wake(): void } | undefined;
  /** A channel being negotiated, dropped if the node closes meanwhile. */
  private attempt: NbdChannel | undefined;
  /** The most recently negotiated session. */
  private latest: NbdSession | undefined;

  private constructor(private readonly params: NbdClientParams) {}

  /** Connects, retrying until `open-timeout` has passed; the first export's info is `info`. */
  static async open(params: NbdClientParams): Promise<NbdClient> {
    const client = new NbdClient(params);
    const deadline = Date.now() + params.openTimeout * 1000;
    for (let pause = FIRST_RETRY_MS; ; pause = Math.min(2 * pause, MAX_RETRY_MS)) {
      try {
        client.session = await client.connect(false);
        client.state = 'connected';
        return client;
      } catch (error) {
        if (Date.now() + pause > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  /** The export as the latest connection saw it. */
  get info(): NbdExportInfo {
    return this.latest!.info;
  }

  /**
   * Runs `run` on a live session. If the connection drops meanwhile and a
   * reconnect is awaited, `run` is repeated on the new session.
   */
  async request<T>(run: (session: NbdSession) => Promise<T>): Promise<T> {
    for (;;) {
      const session = await this.ready();
      try {
        return await run(session);
      } catch (error) {
        if (!(error instanceof ConnectionLostError)) throw error;
        if (!this.waiting()) throw this.unavailable();
      }
    }
  }

  /** Stops reconnecting, fails waiting requests, disconnects politely (NBD_CMD_DISC). */
  async close(): Promise<void> {
    this.state = 'closed';
    clearTimeout(this.deadlineTimer);
    if (this.retry !== undefined) {
      clearTimeout(this.retry.timer);
      this.retry.wake();
    }
    this.attempt?.destroy();
    this.rejectWaiters(new BlockIoError('EIO', 'NBD client closed'));
    const session = this.session;
    this.session = undefined;
    await session?.disconnect();
  }

  private async connect(reconnect: boolean): Promise<NbdSession> {
    const channel = await NbdChannel.open(this.params.server);
    if (this.state === 'closed') {
      channel.destroy();
      throw new BlockLayerError('NBD client closed');
    }
    this.attempt = channel;
    try {
      const info = await negotiate(channel, this.params.handshake);
      const problem = reconnect ? this.params.compatible(info) : undefined;
      if (problem !== undefined) throw new BlockLayerError(problem);
      const session = new NbdSession(channel, info, (lost, error) => this.lost(lost, error));
      this.latest = session;
      return session;
    } catch (error) {
      channel.destroy();
      throw error;
    } finally {
      this.attempt = undefined;
    }
  }

  private ready(): Promise<NbdSession> {
    if (this.state === 'connected') return Promise.resolve(this.session!);
    if (!this.waiting()) return Promise.reject(this.unavailable());
    const waiter = deferred<NbdSession>();
    this.waiters.push(waiter);
    return waiter.promise;
  }

  private waiting(): boolean {
    return this.state === 'connecting' && Date.now() < this.waitUntil;
  }

  private unavailable(): BlockIoError {
    if (this.state === 'closed') return new BlockIoError('EIO', 'NBD client closed');
    const where = `NBD server '${describeAddress(this.params.server)}'`;
    if (this.state === 'failed') return new BlockIoError('EIO', `Connection to ${where} failed: ${this.reason}`);
    const delay = this.params.reconnectDelay;
    const waited = delay > 0 ? `; not reconnected within reconnect-delay (${delay} s)` : '';
    return new BlockIoError('EIO', `Lost the connection to ${where}: ${this.reason}${waited}`);
  }

  /** The session's connection ended: give up (protocol error) or reconnect. */
  private lost(session: NbdSession, error: ConnectionLostError): void {
    if (session !== this.session || this.state !== 'connected') return;
    this.session = undefined;
    this.reason = error.message;
    if (error.fatal) {
      this.state = 'failed';
      return;
    }
    this.state = 'connecting';
    const delayMs = this.params.reconnectDelay * 1000;
    this.waitUntil = Date.now() + delayMs;
    if (delayMs > 0) {
      this.deadlineTimer = setTimeout(() => {
        this.waitUntil = 0;
        this.rejectWaiters(this.unavailable());
      }, delayMs);
    }
    void this.reconnect();
  }

  private async reconnect(): Promise<void> {
    for (let pause = FIRST_RETRY_MS; this.state === 'connecting'; pause = Math.min(2 * pause, MAX_RETRY_MS)) {
      try {
        const session = await this.connect(true);
        if (this.state !== 'connecting') {
          await session.disconnect();
          return;
        }
        this.session = session;
        this.state = 'connected';
        clearTimeout(this.deadlineTimer);
        for (const waiter of this.waiters.splice(0)) waiter.resolve(session);
        return;
      } catch {
        await new Promise<void>((wake) => {
          this.retry = { timer: setTimeout(wake, pause), wake };
        });
        this.retry = undefined;
      }
    }
  }

  private rejectWaiters(error: Error): void {
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
  }
}
