/**
 * How a node's requests reach its driver, once the node has checked and
 * tracked them: alignment (read-modify-write, bounce buffers), splitting at
 * `maxTransfer`, detect-zeroes, FUA and write-zeroes emulation, filter
 * pass-through to the filtered child, one-at-a-time drivers, and block
 * status collected into exact, merged extents.
 */
import { BlockIoError } from '../errors.js';
import { Mutex } from '../util/mutex.js';
import { alignDown, alignUp, chunks, coveringRange, isAligned, isZeroBuffer } from './alignment.js';
import type { NodeSettings } from './base-options.js';
import type { CopyRange } from './copy-range.js';
import type { BlockDriverDefinition, DriverCapabilities, DriverLimits, PreallocMode } from './driver.js';
import type { NodeEdge } from './node-edge.js';
import type { BlockStatusExtent, WriteFlags, ZeroFlags } from './request.js';

/** Largest buffer used when zeroes have to be written as data. */
const ZERO_CHUNK = 1 << 20;

/** `extent` (whose host offset at its clipped start is `hostOffset`) extends `last` seamlessly. */
function continues(last: BlockStatusExtent, extent: BlockStatusExtent, hostOffset: number | undefined): boolean {
  if (last.data !== extent.data || last.zero !== extent.zero || last.allocated !== extent.allocated) return false;
  if (last.hostOffset === undefined || hostOffset === undefined) return last.hostOffset === hostOffset;
  return last.hostOffset + last.length === hostOffset;
}

export class DriverIo {
  /** The node's size in bytes; changes with truncate. */
  length: number;
  private readonly lock: Mutex | undefined;
  private readonly filteredChild: NodeEdge | undefined;

  constructor(
    private readonly nodeName: string,
    private readonly driver: BlockDriverDefinition,
    private readonly state: unknown,
    readonly limits: Readonly<DriverLimits>,
    private readonly capabilities: Readonly<DriverCapabilities>,
    private readonly settings: Readonly<NodeSettings>,
    private readonly children: ReadonlyMap<string, NodeEdge>,
  ) {
    this.length = driver.getLength(state);
    this.lock = capabilities.concurrency === 'serialize' ? new Mutex() : undefined;
    const spec = driver.children?.find((c) => c.filtered);
    this.filteredChild = spec === undefined ? undefined : children.get(spec.name);
  }

  /** The driver's flush, then every child this node writes to (QEMU's bdrv_co_flush). */
  async flush(): Promise<void> {
    if (this.driver.flush !== undefined) await this.callDriver(() => this.driver.flush!(this.state));
    if (this.driver.flushesChildren === true) return;
    for (const edge of this.children.values()) if (!edge.node.readOnly) await edge.flush();
  }

  async close(): Promise<void> {
    await this.driver.close?.(this.state);
  }

  /** Not async: it hands on the promise of the path it picks (one promise less per request); BlockNode awaits it. */
  write(offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
    if (this.settings.detectZeroes !== 'off' && isZeroBuffer(buf)) {
      const mayUnmap = this.settings.detectZeroes === 'unmap' && this.settings.discard === 'unmap';
      return this.writeZeroes(offset, buf.length, { ...flags, mayUnmap });
    }
    return this.alignedWrite(offset, buf, flags);
  }

  async writeZeroes(offset: number, length: number, flags: ZeroFlags): Promise<void> {
    const align = this.limits.requestAlignment;
    const end = offset + length;
    const alignedStart = Math.min(alignUp(offset, align), end);
    const alignedEnd = end === this.length ? end : Math.max(alignDown(end, align), alignedStart);
    if (alignedStart > offset) await this.alignedWrite(offset, Buffer.alloc(alignedStart - offset), flags);
    if (alignedEnd > alignedStart) await this.zeroAligned(alignedStart, alignedEnd - alignedStart, flags);
    if (end > alignedEnd) await this.alignedWrite(alignedEnd, Buffer.alloc(end - alignedEnd), flags);
  }

  private async zeroAligned(offset: number, length: number, flags: ZeroFlags): Promise<void> {
    const { driver } = this;
    if (driver.writeZeroes !== undefined) {
      for (const [at, bytes] of chunks(offset, length, this.limits.maxTransfer, this.limits.requestAlignment)) {
        await this.callDriver(() => driver.writeZeroes!(this.state, at, bytes, flags));
      }
      return;
    }
    const child = this.filteredChild;
    if (child !== undefined) return child.writeZeroes(offset, length, flags);
    if (flags.noFallback) throw new BlockIoError('ENOTSUP');
    const zeroes = Buffer.alloc(Math.min(length, ZERO_CHUNK, alignDown(this.limits.maxTransfer, this.limits.requestAlignment) || ZERO_CHUNK));
    for (const [at, bytes] of chunks(offset, length, zeroes.length, this.limits.requestAlignment)) {
      await this.transferWrite(at, bytes === zeroes.length ? zeroes : zeroes.subarray(0, bytes), flags);
    }
  }

  async discard(offset: number, length: number): Promise<void> {
    const { driver } = this;
    if (driver.discard !== undefined) {
      for (const [at, bytes] of chunks(offset, length, this.limits.maxTransfer, this.limits.requestAlignment)) {
        await this.callDriver(() => driver.discard!(this.state, at, bytes));
      }
      return;
    }
    await this.filteredChild?.discard(offset, length);
  }

  read(offset: number, buf: Buffer): Promise<void> {
    const align = this.limits.requestAlignment;
    if (isAligned(offset, buf.length, align) || offset + buf.length === this.length && offset % align === 0) {
      return this.transferRead(offset, buf);
    }
    return this.bounceRead(offset, buf);
  }

  private async bounceRead(offset: number, buf: Buffer): Promise<void> {
    const align = this.limits.requestAlignment;
    const range = coveringRange(offset, buf.length, align, this.length);
    const bounce = Buffer.allocUnsafe(range.bytes);
    await this.transferRead(range.offset, bounce);
    bounce.copy(buf, 0, offset - range.offset, offset - range.offset + buf.length);
  }

  /** Aligned writes go straight through (not async: one promise less per request). */
  private alignedWrite(offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
    const align = this.limits.requestAlignment;
    if (isAligned(offset, buf.length, align) || offset + buf.length === this.length && offset % align === 0) {
      return this.transferWrite(offset, buf, flags);
    }
    return this.readModifyWrite(offset, buf, flags);
  }

  /** Read-modify-write for unaligned writes; the tracker has serialised the aligned range. */
  private async readModifyWrite(offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
    const align = this.limits.requestAlignment;
    const range = coveringRange(offset, buf.length, align, this.length);
    const bounce = Buffer.allocUnsafe(range.bytes);
    await this.transferRead(range.offset, bounce);
    buf.copy(bounce, offset - range.offset);
    await this.transferWrite(range.offset, bounce, flags);
  }

  private transferRead(offset: number, buf: Buffer): Promise<void> {
    if (buf.length <= this.limits.maxTransfer) return this.readPart(offset, buf);
    return this.readInChunks(offset, buf);
  }

  private async readInChunks(offset: number, buf: Buffer): Promise<void> {
    for (const [at, bytes] of chunks(offset, buf.length, this.limits.maxTransfer, this.limits.requestAlignment)) {
      await this.readPart(at, buf.subarray(at - offset, at - offset + bytes));
    }
  }

  private readPart(at: number, part: Buffer): Promise<void> {
    const { driver } = this;
    if (driver.read !== undefined) return this.callDriver(() => driver.read!(this.state, at, part));
    if (this.filteredChild !== undefined) return this.filteredChild.read(at, part);
    return Promise.reject(new BlockIoError('ENOTSUP', `Driver '${driver.name}' cannot read`));
  }

  private transferWrite(offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
    // The common case: one driver request, nothing to emulate.
    if (!(flags.fua ?? false) && buf.length <= this.limits.maxTransfer) return this.writePart(offset, buf, flags);
    return this.splitWrite(offset, buf, flags);
  }

  private async splitWrite(offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
    const emulateFua = (flags.fua ?? false) && !this.capabilities.canFua && this.driver.write !== undefined;
    const driverFlags = emulateFua ? { ...flags, fua: false } : flags;
    if (buf.length <= this.limits.maxTransfer) {
      await this.writePart(offset, buf, driverFlags);
    } else {
      for (const [at, bytes] of chunks(offset, buf.length, this.limits.maxTransfer, this.limits.requestAlignment)) {
        await this.writePart(at, buf.subarray(at - offset, at - offset + bytes), driverFlags);
      }
    }
    if (emulateFua && !this.settings.noFlush) await this.flush();
  }

  private writePart(at: number, part: Buffer, flags: WriteFlags): Promise<void> {
    const { driver } = this;
    if (driver.write !== undefined) return this.callDriver(() => driver.write!(this.state, at, part, flags));
    if (this.filteredChild !== undefined) return this.filteredChild.write(at, part, flags);
    return Promise.reject(new BlockIoError('EACCES', `Driver '${driver.name}' cannot write`));
  }

  async blockStatus(offset: number, end: number): Promise<BlockStatusExtent[]> {
    const extents: BlockStatusExtent[] = [];
    const align = this.limits.requestAlignment;
    let position = offset;
    while (position < end) {
      const askFrom = alignDown(position, align);
      const askTo = Math.min(alignUp(end, align), this.length);
      const answer = await this.statusFromDriver(askFrom, askTo - askFrom);
      let advanced = false;
      for (const extent of answer) {
        const from = Math.max(extent.offset, position);
        const to = Math.min(extent.offset + extent.length, end);
        if (extent.offset > position || extent.length <= 0) break;
        if (to <= from) continue;
        const hostOffset = extent.hostOffset === undefined ? undefined : extent.hostOffset + (from - extent.offset);
        const last = extents[extents.length - 1];
        if (last !== undefined && continues(last, extent, hostOffset)) {
          last.length += to - from;
        } else {
          const piece: BlockStatusExtent = { offset: from, length: to - from, data: extent.data, zero: extent.zero, allocated: extent.allocated };
          if (hostOffset !== undefined) piece.hostOffset = hostOffset;
          extents.push(piece);
        }
        position = to;
        advanced = true;
      }
      if (!advanced) {
        throw new BlockIoError('EIO', `Driver '${this.driver.name}' returned no block status at ${position} on node '${this.nodeName}'`);
      }
    }
    return extents;
  }

  private async statusFromDriver(offset: number, length: number): Promise<BlockStatusExtent[]> {
    const { driver } = this;
    if (driver.blockStatus !== undefined) return this.callDriver(() => driver.blockStatus!(this.state, offset, length));
    const child = this.filteredChild;
    if (child !== undefined) return child.blockStatus(offset, length);
    return [{ offset, length, data: true, zero: false, allocated: true }];
  }

  /** Copy offloading has no emulation and no filter pass-through (QEMU's filters do not offload either): ENOTSUP. */
  copyRangeFrom(range: CopyRange): Promise<void> {
    const { driver } = this;
    if (driver.copyRangeFrom === undefined) return Promise.reject(this.cannotOffload());
    return this.callDriver(() => driver.copyRangeFrom!(this.state, range));
  }

  copyRangeTo(range: CopyRange): Promise<void> {
    const { driver } = this;
    if (driver.copyRangeTo === undefined) return Promise.reject(this.cannotOffload());
    return this.callDriver(() => driver.copyRangeTo!(this.state, range));
  }

  private cannotOffload(): BlockIoError {
    return new BlockIoError('ENOTSUP', `Driver '${this.driver.name}' of node '${this.nodeName}' cannot offload copies`);
  }

  async truncate(length: number, preallocation: PreallocMode = 'off'): Promise<void> {
    const { driver } = this;
    const child = this.filteredChild;
    if (driver.truncate !== undefined) {
      if (preallocation !== 'off' && this.capabilities.preallocation?.includes(preallocation) !== true) {
        throw new BlockIoError('ENOTSUP', `Unsupported preallocation mode '${preallocation}'`);
      }
      await this.callDriver(() => driver.truncate!(this.state, length, preallocation));
    } else if (child !== undefined) await child.truncate(length, preallocation);
    else throw new BlockIoError('ENOTSUP', 'Image format driver does not support resize');
    this.length = driver.getLength(this.state);
  }

  private callDriver<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock === undefined ? fn() : this.lock.run(fn);
  }
}
