/**
 * Sparse storage in fixed-size pages: a page exists only once written with
 * something other than zeroes, so memory use is bounded by what was written
 * and never exceeds the disk size.
 */
import { isZeroBuffer } from '../../core/block/alignment.js';

export const PAGE_SIZE = 64 * 1024;

export class SparsePages {
  private readonly pages = new Map<number, Buffer>();

  /** Bytes held in memory. */
  get allocatedBytes(): number {
    return this.pages.size * PAGE_SIZE;
  }

  has(index: number): boolean {
    return this.pages.has(index);
  }

  read(offset: number, buf: Buffer): void {
    this.forEachPart(offset, buf.length, (index, within, length, done) => {
      const page = this.pages.get(index);
      if (page === undefined) buf.fill(0, done, done + length);
      else page.copy(buf, done, within, within + length);
    });
  }

  write(offset: number, buf: Buffer): void {
    this.forEachPart(offset, buf.length, (index, within, length, done) => {
      let page = this.pages.get(index);
      if (page === undefined) {
        page = Buffer.alloc(PAGE_SIZE);
        this.pages.set(index, page);
      }
      buf.copy(page, within, done, done + length);
    });
  }

  /** Zeroes a range: whole pages are dropped, partial ones cleared (and dropped once all zero). */
  zero(offset: number, length: number): void {
    this.forEachPart(offset, length, (index, within, part) => {
      const page = this.pages.get(index);
      if (page === undefined) return;
      if (part < PAGE_SIZE) page.fill(0, within, within + part);
      if (part === PAGE_SIZE || isZeroBuffer(page)) this.pages.delete(index);
    });
  }

  private forEachPart(
    offset: number,
    length: number,
    visit: (index: number, within: number, length: number, done: number) => void,
  ): void {
    let done = 0;
    while (done < length) {
      const position = offset + done;
      const index = Math.floor(position / PAGE_SIZE);
      const within = position % PAGE_SIZE;
      const part = Math.min(PAGE_SIZE - within, length - done);
      visit(index, within, part, done);
      done += part;
    }
  }
}
