/**
 * What convert copies: one image, or several read one after another
 * (`qemu-img convert A B … OUT` concatenates them). With several, each
 * starts at a whole 512-byte sector, as qemu-img counts their sizes in
 * sectors: an image whose size is not a multiple of 512 is followed by
 * zeroes up to the next sector.
 */
import type { BlockNode } from '../block/block-node.js';
import { copyRange } from '../block/copy-range.js';
import type { BlockStatusExtent } from '../block/request.js';
import type { CopyOp } from './copy-plan.js';
import { ImageToolError, ioErrorText } from './image-access.js';
import { chainStatus } from './chain-status.js';

const SECTOR = 512;

interface Part {
  node: BlockNode;
  /** Where the part begins in the whole. */
  start: number;
  /** Its length in the whole (the image's, rounded up to a sector when there are several). */
  length: number;
}

/** Reads `buf` at `offset` of `node` a sector at a time; a sector that fails reads as zeroes and is reported. */
async function readBySector(node: BlockNode, offset: number, buf: Buffer, failed: (imageOffset: number, error: unknown) => void): Promise<void> {
  for (let at = 0; at < buf.length; at += SECTOR) {
    const sector = buf.subarray(at, Math.min(at + SECTOR, buf.length));
    try {
      await node.read(offset + at, sector);
    } catch (error) {
      failed(offset + at, error);
      sector.fill(0);
    }
  }
}

/** What convert needs of a status extent: where, and whether it reads as zeroes or (-B) is the image's own. */
type PartExtent = Pick<BlockStatusExtent, 'offset' | 'length' | 'zero'> & { allocated?: boolean };

/** Hears a warning, qemu-img's text, for each sector --salvage could not read or get the status of. */
export type SalvageListener = (warning: string) => void;

export class ConvertSource {
  readonly length: number;
  private readonly parts: Part[];

  /** `salvage`: --salvage, which hears of each thing read as zeroes or data because it could not be read. */
  constructor(
    nodes: readonly BlockNode[],
    private readonly salvage?: SalvageListener,
  ) {
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

  /**
   * Reads `buf` at `offset` of the whole; the sector padding after an image
   * reads as zeroes. Salvaging, an image's part that cannot be read is read
   * again a 512-byte sector at a time, as qemu-img does: a sector that
   * still fails reads as zeroes, with a warning naming its offset in that
   * image.
   */
  async read(offset: number, buf: Buffer): Promise<void> {
    const { salvage } = this;
    for (const { part, from, to } of this.within(offset, buf.length)) {
      const dataEnd = Math.min(to, part.start + part.node.length);
      if (from < dataEnd) {
        const local = from - part.start;
        const piece = buf.subarray(from - offset, dataEnd - offset);
        try {
          await part.node.read(local, piece);
        } catch (error) {
          if (salvage === undefined) throw error;
          await readBySector(part.node, local, piece, (at, failure) => salvage(`error while reading offset ${at}: ${ioErrorText(failure)}`));
        }
      }
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
        for (const e of await this.partStatus(part.node, from - part.start, dataEnd - from, topOnly)) {
          const kind = topOnly && e.allocated === false ? 'skip' : e.zero ? 'zero' : 'data';
          ops.push({ kind, offset: e.offset + part.start, length: e.length });
        }
        // A part described only in part: the caller asks again from where this ends.
        if (ops.length > 0 && ops[ops.length - 1]!.offset + ops[ops.length - 1]!.length < dataEnd) return ops;
      }
      if (dataEnd < to) ops.push({ kind: 'zero', offset: Math.max(from, dataEnd), length: to - Math.max(from, dataEnd) });
    }
    return ops;
  }

  /**
   * One image's status from `offset` (the whole chain's, or its own with
   * `topOnly`). A failure fails the conversion with qemu-img's message, or,
   * salvaging, is asked again on a quarter of the range until a sector
   * alone fails: that sector is then taken for data, with a warning.
   */
  private async partStatus(node: BlockNode, offset: number, length: number, topOnly: boolean): Promise<PartExtent[]> {
    for (let asked = length; ; ) {
      try {
        return await (topOnly ? node.blockStatus(offset, asked) : chainStatus(node, offset, asked));
      } catch (error) {
        const text = `error while reading block status at offset ${offset}: ${ioErrorText(error)}`;
        if (this.salvage === undefined) throw new ImageToolError(text);
        if (asked <= SECTOR) {
          this.salvage(text);
          return [{ offset, length: asked, zero: false, allocated: true }];
        }
        asked = Math.ceil(asked / SECTOR / 4) * SECTOR;
      }
    }
  }
}
