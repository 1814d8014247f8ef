/**
 * The image file while blockdev-create formats a node: the node's I/O
 * through the creation's edge to it, behind the interface creation writes
 * through (qcow2-local-file.ts is the same for a plain file). Writes past
 * the end grow the node first (QEMU lets its creation write beyond the end
 * of file). As for a new file, flushes wait for one at the end, and the
 * whole file counts as data.
 */
import type { PreallocMode } from '../../core/block/driver.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import type { BlockStatusExtent } from '../../core/block/request.js';
import type { CreationFile } from './qcow2-create.js';

export class NodeImageFile implements CreationFile {
  constructor(private readonly child: NodeChild) {}

  get length(): number {
    return this.child.length;
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    await this.child.read(offset, buf);
  }

  async write(offset: number, buf: Buffer): Promise<void> {
    await this.reach(offset + buf.length);
    await this.child.write(offset, buf);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.reach(offset + length);
    await this.child.writeZeroes(offset, length);
  }

  async discard(): Promise<void> {}

  async flush(): Promise<void> {}

  async truncate(length: number, preallocation?: PreallocMode): Promise<void> {
    await this.child.truncate(length, preallocation);
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    return [{ offset, length, data: true, zero: false, allocated: true, hostOffset: offset }];
  }

  /** The one real flush, when the image is complete. */
  async sync(): Promise<void> {
    await this.child.flush();
  }

  private async reach(end: number): Promise<void> {
    if (end > this.child.length) await this.child.truncate(end);
  }
}
