/**
 * Reads exact-sized fields from a byte stream that arrives in arbitrary
 * pieces (a peer may send one byte at a time). No I/O of its own: the owner
 * pushes what the socket delivers and ends it when the socket closes.
 *
 * Memory stays bounded: one read is at most `maxRead` bytes (a larger
 * request is refused before anything is allocated), big reads are copied
 * straight into their target as data arrives, skips discard without
 * allocating, and once more than `highWaterMark` bytes wait unread
 * `onFull` asks the owner to pause the socket (`onDrained` to resume).
 */
import { NBD_MAX_PAYLOAD } from './constants.js';

export interface FrameReaderOptions {
  maxRead?: number;
  highWaterMark?: number;
  onFull?(): void;
  onDrained?(): void;
}

/** The stream ended before a read was complete. */
export class StreamEndedError extends Error {
  constructor(message = 'server closed the connection') {
    super(message);
    this.name = 'StreamEndedError';
  }
}

interface PendingRead {
  /** Where the bytes go; undefined for a skip. */
  target: Buffer | undefined;
  want: number;
  done: number;
  resolve(): void;
  reject(error: Error): void;
}

const DEFAULT_HIGH_WATER_MARK = 4 * 1024 * 1024;

export class FrameReader {
  private readonly queue: Buffer[] = [];
  /** Bytes of queue[0] already consumed. */
  private head = 0;
  private size = 0;
  private pending: PendingRead | undefined;
  private endError: Error | undefined;
  private full = false;
  private readonly maxRead: number;
  private readonly highWaterMark: number;

  constructor(private readonly options: FrameReaderOptions = {}) {
    this.maxRead = options.maxRead ?? NBD_MAX_PAYLOAD;
    this.highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
  }

  /** Bytes received and not yet read. */
  get buffered(): number {
    return this.size;
  }

  get ended(): boolean {
    return this.endError !== undefined;
  }

  /** Bytes from the socket. */
  push(chunk: Buffer): void {
    if (this.endError !== undefined || chunk.length === 0) return;
    this.queue.push(chunk);
    this.size += chunk.length;
    this.serve();
    if (!this.full && this.size > this.highWaterMark) {
      this.full = true;
      this.options.onFull?.();
    }
  }

  /** The socket closed (or failed with `error`): reads that cannot complete are rejected. */
  end(error?: Error): void {
    if (this.endError !== undefined) return;
    this.endError = error ?? new StreamEndedError();
    const pending = this.pending;
    if (pending !== undefined) {
      this.pending = undefined;
      pending.reject(this.endError);
    }
  }

  /** Exactly `length` bytes. */
  async read(length: number): Promise<Buffer> {
    this.checkLength(length);
    if (this.pending === undefined && this.size >= length) return this.take(length);
    const target = Buffer.allocUnsafe(length);
    await this.wait(target, length);
    return target;
  }

  /** Fills `target` exactly (data read straight into the caller's buffer). */
  async readInto(target: Buffer): Promise<void> {
    this.checkLength(target.length);
    await this.wait(target, target.length);
  }

  /** Discards `length` bytes without keeping them (any length: nothing is allocated). */
  async skip(length: number): Promise<void> {
    await this.wait(undefined, length);
  }

  private checkLength(length: number): void {
    if (!Number.isSafeInteger(length) || length < 0 || length > this.maxRead) {
      throw new RangeError(`read of ${length} bytes exceeds the limit of ${this.maxRead}`);
    }
  }

  private wait(target: Buffer | undefined, want: number): Promise<void> {
    if (this.pending !== undefined) throw new Error('FrameReader: only one read at a time');
    if (want === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.pending = { target, want, done: 0, resolve, reject };
      this.serve();
      if (this.pending !== undefined && this.endError !== undefined) {
        this.pending = undefined;
        reject(this.endError);
      }
    });
  }

  /** Moves queued bytes into the pending read. */
  private serve(): void {
    const pending = this.pending;
    if (pending === undefined) return;
    while (pending.done < pending.want && this.size > 0) {
      const first = this.queue[0]!;
      const n = Math.min(first.length - this.head, pending.want - pending.done);
      pending.target?.set(first.subarray(this.head, this.head + n), pending.done);
      pending.done += n;
      this.consume(n);
    }
    if (pending.done === pending.want) {
      this.pending = undefined;
      pending.resolve();
    }
  }

  /** `length` queued bytes (available now) as one Buffer, without a copy when they lie in one chunk. */
  private take(length: number): Buffer {
    const first = this.queue[0];
    if (first !== undefined && first.length - this.head >= length) {
      const out = first.subarray(this.head, this.head + length);
      this.consume(length);
      return out;
    }
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const chunk = this.queue[0]!;
      const n = Math.min(chunk.length - this.head, length - done);
      chunk.copy(out, done, this.head, this.head + n);
      done += n;
      this.consume(n);
    }
    return out;
  }

  private consume(n: number): void {
    this.head += n;
    this.size -= n;
    if (this.head === this.queue[0]!.length) {
      this.queue.shift();
      this.head = 0;
    }
    if (this.full && this.size <= this.highWaterMark / 2) {
      this.full = false;
      this.options.onDrained?.();
    }
  }
}
