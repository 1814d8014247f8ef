/**
 * In-flight requests of one node. Drain is built on it: a quiesced tracker
 * holds new requests that are not nested in a parent's request, and
 * `whenIdle` resolves once nothing is in flight. Unaligned writes mark their
 * aligned range serialising (read-modify-write must not interleave with
 * another write to the same blocks); a request waits only for overlapping
 * requests that began before it, so waits never form a cycle.
 */
import { deferred, type Deferred } from '../util/deferred.js';
import type { RequestKind } from './request.js';

export interface TrackedRequest {
  readonly kind: RequestKind;
  readonly offset: number;
  readonly bytes: number;
  /** Resolves when the request has left the node. */
  readonly done: Promise<void>;
}

class Tracked implements TrackedRequest {
  /** Created only when someone waits: most requests are never waited for. */
  private finished: Deferred | undefined;
  private ended = false;

  constructor(
    readonly kind: RequestKind,
    readonly offset: number,
    readonly bytes: number,
    readonly sequence: number,
    /** The aligned range a read-modify-write owns, if this is one. */
    readonly serialising?: { offset: number; bytes: number },
  ) {}

  get done(): Promise<void> {
    if (this.ended) return Promise.resolve();
    this.finished ??= deferred();
    return this.finished.promise;
  }

  finish(): void {
    this.ended = true;
    this.finished?.resolve();
  }

  /** The range others must not overlap while this runs. */
  get range(): { offset: number; bytes: number } {
    return this.serialising ?? this;
  }
}

function overlaps(a: { offset: number; bytes: number }, b: { offset: number; bytes: number }): boolean {
  return a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
}

export class RequestTracker {
  private readonly inFlight = new Set<Tracked>();
  private sequence = 0;
  private serialisingCount = 0;
  private quiesceDepth = 0;
  private resumed: Deferred | undefined;
  private idle: Deferred | undefined;
  private highestWrite = 0;

  /** The end of the furthest write (data or zeroes) that reached the node, failed or not (QEMU's wr_highest_offset). */
  get wrHighestOffset(): number {
    return this.highestWrite;
  }

  get requests(): ReadonlySet<TrackedRequest> {
    return this.inFlight;
  }

  get quiesced(): boolean {
    return this.quiesceDepth > 0;
  }

  /**
   * Registers a request, first waiting while quiesced unless it is nested.
   * Returns the request itself when nothing makes it wait (the common case,
   * which then costs no promise), else a promise of it.
   */
  begin(
    kind: RequestKind,
    offset: number,
    bytes: number,
    nested: boolean,
    serialising?: { offset: number; bytes: number },
  ): TrackedRequest | Promise<TrackedRequest> {
    if ((nested || this.resumed === undefined) && serialising === undefined && this.serialisingCount === 0) {
      const request = new Tracked(kind, offset, bytes, this.sequence++);
      this.inFlight.add(request);
      return request;
    }
    return this.beginWaiting(kind, offset, bytes, nested, serialising);
  }

  private async beginWaiting(
    kind: RequestKind,
    offset: number,
    bytes: number,
    nested: boolean,
    serialising?: { offset: number; bytes: number },
  ): Promise<TrackedRequest> {
    while (!nested && this.resumed !== undefined) await this.resumed.promise;
    const request = new Tracked(kind, offset, bytes, this.sequence++, serialising);
    this.inFlight.add(request);
    if (serialising !== undefined) this.serialisingCount++;
    if (this.serialisingCount > 0) await this.waitForEarlierOverlaps(request);
    return request;
  }

  end(request: TrackedRequest): void {
    const tracked = request as Tracked;
    if (!this.inFlight.delete(tracked)) return;
    if ((tracked.kind === 'write' || tracked.kind === 'write-zeroes') && tracked.offset + tracked.bytes > this.highestWrite) {
      this.highestWrite = tracked.offset + tracked.bytes;
    }
    if (tracked.serialising !== undefined) this.serialisingCount--;
    tracked.finish();
    if (this.inFlight.size === 0 && this.idle !== undefined) {
      this.idle.resolve();
      this.idle = undefined;
    }
  }

  /** Starts holding new non-nested requests; nests. */
  quiesce(): void {
    if (this.quiesceDepth++ === 0) this.resumed = deferred();
  }

  unquiesce(): void {
    if (this.quiesceDepth === 0) throw new Error('unbalanced drain end');
    if (--this.quiesceDepth === 0) {
      const resumed = this.resumed;
      this.resumed = undefined;
      resumed?.resolve();
    }
  }

  /** Resolves when no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.inFlight.size === 0) return Promise.resolve();
    this.idle ??= deferred();
    return this.idle.promise;
  }

  private async waitForEarlierOverlaps(request: Tracked): Promise<void> {
    for (;;) {
      let blocker: Tracked | undefined;
      for (const other of this.inFlight) {
        if (other.sequence >= request.sequence) continue;
        if (request.serialising === undefined && other.serialising === undefined) continue;
        if (overlaps(request.range, other.range)) {
          blocker = other;
          break;
        }
      }
      if (blocker === undefined) return;
      await blocker.done;
    }
  }
}
