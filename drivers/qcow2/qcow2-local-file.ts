/**
 * The image file while `create` builds it: a plain file handle behind the
 * same interface the driver uses on its `file` child, so creation reuses
 * the allocation and L1 growth code (as QEMU's qcow2_co_create opens the
 * image it is creating). Flushes are deferred to one at the end, like
 * QEMU's BDRV_O_NO_FLUSH during creation.
 */
import type { FileHandle } from 'node:fs/promises';
import type { PreallocMode } from '../../core/block/driver.js';
import type { BlockStatusExtent } from '../../core/block/request.js';
import { BlockIoError } from '../../core/errors.js';
import type { ImageFile } from './qcow2-image.js';

export class LocalImageFile implements ImageFile {
  length = 0;

  constructor(private readonly handle: FileHandle) {}

  static async open(handle: FileHandle): Promise<LocalImageFile> {
    const file = new LocalImageFile(handle);
    file.length = (await handle.stat()).size;
    return file;
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    await this.handle.read(buf, 0, buf.length, offset);
  }

  async write(offset: number, buf: Buffer): Promise<void> {
    await this.handle.write(buf, 0, buf.length, offset);
    this.length = Math.max(this.length, offset + buf.length);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.write(offset, Buffer.alloc(length));
  }

  async discard(): Promise<void> {}

  async flush(): Promise<void> {}

  /** A plain resize: images that preallocate their data are written through a node of the file instead. */
  async truncate(length: number, preallocation: PreallocMode = 'off'): Promise<void> {
    if (preallocation !== 'off') throw new BlockIoError('ENOTSUP', `Unsupported preallocation mode '${preallocation}'`);
    await this.handle.truncate(length);
    this.length = length;
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    return [{ offset, length, data: true, zero: false, allocated: true, hostOffset: offset }];
  }

  /** The one real flush, when the image is complete. */
  async sync(): Promise<void> {
    await this.handle.datasync();
  }
}
