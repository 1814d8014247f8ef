/**
 * One QMP connection: greeting, capabilities negotiation, request checks and
 * replies in QEMU's words, events once negotiated. Transport-free: the
 * server feeds it bytes and gives it a way to send lines. Requests are
 * answered strictly in order, one at a time across all sessions (the
 * dispatcher), as QEMU's monitor does.
 */
import { BlockLayerError } from '../errors.js';
import type { BlockLayerEvent } from '../hooks/block-layer-hooks.js';
import type { Mutex } from '../util/mutex.js';
import type { CommandRegistry } from './command-registry.js';
import type { QmpSessionControl } from './qmp-command.js';
import { QmpJsonStream } from './qmp-json-stream.js';

/** The greeting's version: the QEMU QMP level we speak, and our package. */
export interface QmpVersion {
  qemu: { micro: number; minor: number; major: number };
  package: string;
}

export const QMP_CAPABILITIES = ['oob'] as const;

/** Requests queued before the session stops reading (QEMU stops at about 8). */
export const MAX_PENDING_REQUESTS = 8;

type Pending = { kind: 'request'; value: unknown } | { kind: 'parse-error'; desc: string };

export interface QmpSessionTransport {
  /** Sends one message (the session adds nothing; the server frames it). */
  send(message: Record<string, unknown>): void;
  /** Stop or resume reading input (backpressure). */
  setReading(reading: boolean): void;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export class QmpSession implements QmpSessionControl {
  private mode: 'negotiation' | 'command' = 'negotiation';
  private oob = false;
  private readonly queue: Pending[] = [];
  private draining = false;
  private closed = false;
  private readonly parser: QmpJsonStream;

  constructor(
    private readonly registry: CommandRegistry,
    private readonly dispatcher: Mutex,
    private readonly transport: QmpSessionTransport,
  ) {
    this.parser = new QmpJsonStream({
      value: (value) => this.enqueue({ kind: 'request', value }),
      error: (desc) => this.enqueue({ kind: 'parse-error', desc }),
    });
  }

  get negotiated(): boolean {
    return this.mode === 'command';
  }

  get oobEnabled(): boolean {
    return this.oob;
  }

  greet(version: QmpVersion): void {
    this.transport.send({ QMP: { version, capabilities: [...QMP_CAPABILITIES] } });
  }

  completeNegotiation(capabilities: readonly string[]): void {
    this.oob = capabilities.includes('oob');
    this.mode = 'command';
  }

  /** Bytes from the client. */
  receive(chunk: Buffer): void {
    if (!this.closed) this.parser.push(chunk);
  }

  /** Events reach a client only after negotiation. */
  deliver(event: BlockLayerEvent): void {
    if (this.mode !== 'command' || this.closed) return;
    const message: Record<string, unknown> = { timestamp: event.timestamp, event: event.event };
    if (event.data !== undefined) message.data = event.data;
    this.transport.send(message);
  }

  close(): void {
    this.closed = true;
    this.queue.length = 0;
  }

  private enqueue(item: Pending): void {
    this.queue.push(item);
    if (this.queue.length >= MAX_PENDING_REQUESTS) this.transport.setReading(false);
    if (!this.draining) void this.drainQueue();
  }

  private async drainQueue(): Promise<void> {
    this.draining = true;
    try {
      for (let item = this.queue.shift(); item !== undefined && !this.closed; item = this.queue.shift()) {
        const current = item;
        await this.dispatcher.run(() => this.handle(current));
        if (this.queue.length < MAX_PENDING_REQUESTS) this.transport.setReading(true);
      }
    } finally {
      this.draining = false;
    }
  }

  private async handle(item: Pending): Promise<void> {
    if (this.closed) return;
    if (item.kind === 'parse-error') {
      this.transport.send({ error: { class: 'GenericError', desc: item.desc } });
      return;
    }
    const request = item.value;
    if (!isPlainObject(request)) {
      this.transport.send({ error: { class: 'GenericError', desc: 'QMP input must be a JSON object' } });
      return;
    }
    const hasId = 'id' in request;
    try {
      const result = await this.dispatch(request);
      if (!this.closed) this.transport.send(hasId ? { return: result, id: request.id } : { return: result });
    } catch (error) {
      if (this.closed) return;
      const e = error instanceof BlockLayerError ? error : undefined;
      const body = { class: e?.errorClass ?? 'GenericError', desc: error instanceof Error ? error.message : String(error) };
      this.transport.send(hasId ? { id: request.id, error: body } : { error: body });
    }
  }

  /** QEMU's qmp_dispatch: member checks, lookup, OOB rule, negotiation rule, then the command. */
  private async dispatch(request: Record<string, unknown>): Promise<unknown> {
    this.checkMembers(request);
    const oob = !('execute' in request);
    const name = (oob ? request['exec-oob'] : request.execute) as string;
    const command = this.registry.get(name);
    const available = command !== undefined && (this.mode === 'command' || command.allowInNegotiation === true);
    if (!available) {
      throw new BlockLayerError(
        this.mode === 'negotiation'
          ? "Expecting capabilities negotiation with 'qmp_capabilities'"
          : `The command ${name} has not been found`,
        'CommandNotFound',
      );
    }
    if (oob && command.allowOob !== true) throw new BlockLayerError(`The command ${name} does not support OOB`);
    return this.registry.run(command, request.arguments ?? {}, { session: this });
  }

  private checkMembers(request: Record<string, unknown>): void {
    for (const [member, value] of Object.entries(request)) {
      if (member === 'execute' || (member === 'exec-oob' && this.oob)) {
        if (typeof value !== 'string') throw new BlockLayerError(`QMP input member '${member}' must be a string`);
      } else if (member === 'arguments') {
        if (!isPlainObject(value)) throw new BlockLayerError("QMP input member 'arguments' must be an object");
      } else if (member !== 'id') {
        throw new BlockLayerError(`QMP input member '${member}' is unexpected`);
      }
    }
    if (!('execute' in request) && !('exec-oob' in request)) {
      throw new BlockLayerError("QMP input lacks member 'execute'");
    }
    if ('execute' in request && 'exec-oob' in request) {
      throw new BlockLayerError("QMP input member 'execute' clashes with 'exec-oob'");
    }
  }
}
