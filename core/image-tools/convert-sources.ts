/**
 * What convert copies: one image, or several read one after another
 * (`qemu-img convert A B … OUT` concatenates them). With several, each
 * starts at a whole 512-byte sector, as qemu-img counts their sizes in
 * sectors: an image whose size is not a multiple of 512 is followed by
 * zeroes up to the next sector.
 */
import type { BlockNode } from '../block/block-node.js';
import { copyRange } from '../block/copy-range.js';
import type { CopyOp } from './copy-plan.js';
import { chainStatus } from './chain-status.js';

const SECTOR = 512;

interface Part {
  node: BlockNode;
  /** Where the part begins in the whole. */
  start: number;
  /** Its length in the whole (the image's, rounded up to a sector when there are several). */
  length: number;
}

export class ConvertSource {
  readonly length: number;
  private readonly parts: Part[];

  constructor(nodes: readonly BlockNode[]) {
    let start = 0;
    this.parts = nodes.map((node) => {
      const length = nodes.length === 1 ? node.length : Math.ceil(node.length / SECTOR) * SECTOR;
      const part = { node, start, length };
      start += length;
      return part;
    });
    this.length = start;
  }

  /** The one image, when there is one (what bitmaps, snapshots and -B need). */
  get single(): BlockNode | undefined {
    return this.parts.length === 1 ? this.parts[0]!.node : undefined;
  }

  /** The parts `[offset, offset + length)` touches, with the range inside each. */
  private *within(offset: number, length: number): Generator<{ part: Part; from: number; to: number }> {
    for (const part of this.parts) {
      const from = Math.max(offset, part.start);
      const to = Math.min(offset + length, part.start + part.length);
      if (from < to) yield { part, from, to };
    }
  }

  /** Reads `buf` at `offset` of the whole; the sector padding after an image reads as zeroes. */
  async read(offset: number, buf: Buffer): Promise<void> {
    for (const { part, from, to } of this.within(offset, buf.length)) {
      const dataEnd = Math.min(to, part.start + part.node.length);
      if (from < dataEnd) await part.node.read(from - part.start, buf.subarray(from - offset, dataEnd - offset));
      if (dataEnd < to) buf.fill(0, Math.max(from, dataEnd) - offset, to - offset);
    }
  }

  /**
   * Copies `[offset, offset + length)` of the whole to the same place in
   * `target` by copy offloading (copy-range.ts: ENOTSUP where it cannot
   * be); the sector padding after an image is zeroed.
   */
  async copyTo(offset: number, length: number, target: BlockNode): Promise<void> {
    for (const { part, from, to } of this.within(offset, length)) {
      const dataEnd = Math.min(to, part.start + part.node.length);
      if (from < dataEnd) await copyRange(part.node, from - part.start, target, from, dataEnd - from);
      if (dataEnd < to) await target.writeZeroes(Math.max(from, dataEnd), to - Math.max(from, dataEnd));
    }
  }

  /**
   * The status of `[offset, offset + length)` as copy operations, in order:
   * the whole chain's (`topOnly`: what the top image allocates, as -B
   * copies), the padding as zeroes. Describes at least the first byte.
   */
  async status(offset: number, length: number, topOnly: boolean): Promise<CopyOp[]> {
    const ops: CopyOp[] = [];
    for (const { part, from, to } of this.within(offset, length)) {
      const dataEnd = Math.min(to, part.start + part.node.length);
      if (from < dataEnd) {
        const local = from - part.start;
        if (topOnly) {
          for (const e of await part.node.blockStatus(local, dataEnd - from)) {
            ops.push({ kind: !e.allocated ? 'skip' : e.zero ? 'zero' : 'data', offset: e.offset + part.start, length: e.length });
          }
        } else {
          for (const e of await chainStatus(part.node, local, dataEnd - from)) {
            ops.push({ kind: e.zero ? 'zero' : 'data', offset: e.offset + part.start, length: e.length });
          }
        }
        // A part described only in part: the caller asks again from where this ends.
        if (ops.length > 0 && ops[ops.length - 1]!.offset + ops[ops.length - 1]!.length < dataEnd) return ops;
      }
      if (dataEnd < to) ops.push({ kind: 'zero', offset: Math.max(from, dataEnd), length: to - Math.max(from, dataEnd) });
    }
    return ops;
  }
}
