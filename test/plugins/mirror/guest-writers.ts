/**
 * Continuous random guest writes for the mirror tests: writers, each in a
 * stripe of its own (so no two writes in flight overlap and every write's
 * effect is known), write random bytes at random, unaligned offsets
 * through a device until stopped. Every write is applied to a model of the
 * disk in the order the writer made them; a tap on the source node records
 * the writes that reached it, which is what the source held when the
 * mirror pivoted.
 */
import { writeFileSync } from 'node:fs';
import type { BlockBackend } from '../../../core/block/block-backend.js';
import type { BlockNode } from '../../../core/block/block-node.js';
import { untap } from '../../../core/hooks/untap.js';
import { mulberry32 } from '../../helpers/prng.js';


export interface WriterOptions {
  writers: number;
  /** Longest write, in bytes. */
  maxBytes: number;
  /** Pause between one writer's writes, in ms (0: none, the next write goes at once). */
  pauseMs: number;
  seed: number;
}

export class GuestWriters {
  /** The disk as the guest wrote it: every write applied. */
  readonly model: Buffer;
  /** The source as it was when the job pivoted: the writes that reached it applied. */
  readonly sourceModel: Buffer;
  writes = 0;
  writesOnSource = 0;
  private stopped = false;
  private readonly running: Promise<void>[] = [];
  private readonly tapName = 'guest-writers';

  constructor(
    private readonly device: BlockBackend,
    private readonly source: BlockNode,
    initial: Buffer,
    private readonly options: WriterOptions,
  ) {
    this.model = Buffer.from(initial);
    this.sourceModel = Buffer.from(initial);
    source.hooks.afterWrite.tapPromise(this.tapName, async (request, result) => {
      if (request.kind !== 'write' || result.error !== undefined) return;
      request.buffer!.copy(this.sourceModel, request.offset);
      this.writesOnSource++;
    });
  }

  start(): void {
    const stripe = Math.floor(this.device.length / this.options.writers);
    for (let w = 0; w < this.options.writers; w++) this.running.push(this.writer(w * stripe, stripe, mulberry32(this.options.seed + w)));
  }

  /** Stops the writers and waits for their last writes. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
    untap(this.source.hooks.afterWrite, this.tapName);
  }

  private async writer(base: number, stripe: number, next: () => number): Promise<void> {
    while (!this.stopped) {
      const bytes = 1 + (next() % Math.min(this.options.maxBytes, stripe));
      const offset = base + (next() % (stripe - bytes + 1));
      const data = Buffer.allocUnsafe(bytes);
      for (let i = 0; i + 4 <= bytes; i += 4) data.writeUInt32LE(next(), i);
      for (let i = bytes & ~3; i < bytes; i++) data[i] = next() & 0xff;
      await this.device.write(offset, data);
      data.copy(this.model, offset);
      this.writes++;
      if (this.options.pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, this.options.pauseMs));
      else await new Promise((resolve) => setImmediate(resolve));
    }
  }
}

/** Writes a model to a raw image file, for qemu-img compare. */
export function saveModel(path: string, model: Buffer): void {
  writeFileSync(path, model);
}
