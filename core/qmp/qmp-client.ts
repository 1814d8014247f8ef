/**
 * A small QMP client: the CLI's `qmp` subcommand and the tests use it
 * against our daemon and against qemu-storage-daemon alike. It separates
 * events from replies (events interleave with replies) and keeps both in
 * arrival order.
 */
import net from 'node:net';
import { deferred, type Deferred } from '../util/deferred.js';
import type { QmpAddress } from './qmp-server.js';
import { unixSocketPath } from '../util/unix-socket-path.js';

export type QmpMessage = Record<string, unknown>;

export interface QmpEventMessage extends QmpMessage {
  event: string;
  data?: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export class QmpClient {
  private buffer = '';
  private readonly replies: QmpMessage[] = [];
  private readonly events: QmpEventMessage[] = [];
  private replyWaiter: Deferred<QmpMessage> | undefined;
  private eventWaiter: { name: string; found: Deferred<QmpEventMessage> } | undefined;
  private closedError: Error | undefined;
  /** Every line received, in order (for transcript tests). */
  readonly transcript: QmpMessage[] = [];

  private constructor(
    private readonly socket: net.Socket,
    readonly greeting: QmpMessage,
  ) {}

  /** Connects and reads the greeting; with `negotiate`, also sends qmp_capabilities. */
  static async connect(address: QmpAddress | string, options: { negotiate?: boolean } = {}): Promise<QmpClient> {
    const target = typeof address === 'string' ? { type: 'unix' as const, path: address } : address;
    const socket = target.type === 'unix' ? net.connect(unixSocketPath(target.path)) : net.connect(target.port, target.host);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const greeting = deferred<QmpMessage>();
    let client: QmpClient | undefined;
    let pending = '';
    const onGreeting = (chunk: Buffer): void => {
      pending += chunk.toString('utf8');
      const end = pending.indexOf('\n');
      if (end < 0) return;
      socket.off('data', onGreeting);
      client = new QmpClient(socket, JSON.parse(pending.slice(0, end)) as QmpMessage);
      client.attach(pending.slice(end + 1));
      greeting.resolve(client.greeting);
    };
    socket.on('data', onGreeting);
    socket.once('close', () => greeting.reject(new Error('QMP connection closed before the greeting')));
    await greeting.promise;
    if (options.negotiate) await client!.execute('qmp_capabilities');
    return client!;
  }

  /** Sends a command and resolves with its reply (`{return}` or `{error}`), events aside. */
  async execute(command: string, args?: Record<string, unknown>, id?: unknown): Promise<QmpMessage> {
    const request: QmpMessage = { execute: command };
    if (args !== undefined) request.arguments = args;
    if (id !== undefined) request.id = id;
    this.sendRaw(JSON.stringify(request));
    return this.nextReply();
  }

  /** Sends bytes as they are (malformed input tests). */
  sendRaw(text: string | Buffer): void {
    this.socket.write(typeof text === 'string' ? `${text}\n` : text);
  }

  /** The next reply (not event) in arrival order. */
  nextReply(): Promise<QmpMessage> {
    const queued = this.replies.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.closedError) return Promise.reject(this.closedError);
    this.replyWaiter = deferred();
    return this.replyWaiter.promise;
  }

  /** Events received so far and not yet taken. */
  takeEvents(): QmpEventMessage[] {
    return this.events.splice(0, this.events.length);
  }

  /** Resolves with the first event called `name`, earlier events of other names stay queued. */
  waitEvent(name: string): Promise<QmpEventMessage> {
    const index = this.events.findIndex((e) => e.event === name);
    if (index >= 0) return Promise.resolve(this.events.splice(index, 1)[0]!);
    if (this.closedError) return Promise.reject(this.closedError);
    this.eventWaiter = { name, found: deferred() };
    return this.eventWaiter.found.promise;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.once('close', () => resolve());
      this.socket.end();
    });
  }

  private attach(rest: string): void {
    this.socket.on('data', (chunk: Buffer) => this.consume(chunk.toString('utf8')));
    this.socket.on('close', () => {
      this.closedError = new Error('QMP connection closed');
      this.replyWaiter?.reject(this.closedError);
      this.eventWaiter?.found.reject(this.closedError);
    });
    this.socket.on('error', () => undefined);
    this.consume(rest);
  }

  private consume(text: string): void {
    this.buffer += text;
    for (let end = this.buffer.indexOf('\n'); end >= 0; end = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, end).trim();
      this.buffer = this.buffer.slice(end + 1);
      if (line !== '') this.dispatch(JSON.parse(line) as QmpMessage);
    }
  }

  private dispatch(message: QmpMessage): void {
    this.transcript.push(message);
    if (typeof message.event === 'string') {
      const event = message as QmpEventMessage;
      if (this.eventWaiter?.name === event.event) {
        const waiter = this.eventWaiter;
        this.eventWaiter = undefined;
        waiter.found.resolve(event);
      } else {
        this.events.push(event);
      }
      return;
    }
    if (this.replyWaiter !== undefined) {
      const waiter = this.replyWaiter;
      this.replyWaiter = undefined;
      waiter.resolve(message);
    } else {
      this.replies.push(message);
    }
  }
}
