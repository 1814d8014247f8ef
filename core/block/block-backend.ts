/**
 * A named backend (QEMU's BlockBackend): the device an application or guest
 * does its I/O through, e.g. `virtio0`. Its requests come from outside the
 * graph, so a drained node holds them; `device` arguments of commands accept
 * its name. The node behind it can change (mirror completion) while it keeps
 * its name. It accounts the I/O that comes through it (query-blockstats).
 */
import { AcctType, BlockAcctStats } from './block-accounting.js';
import type { BlockNode } from './block-node.js';
import type { NodeEdge, NodeParent } from './node-edge.js';
import type { BlockStatusExtent, WriteFlags, ZeroFlags } from './request.js';

export class BlockBackend implements NodeParent {
  readonly parentKind = 'backend';
  readonly edge: NodeEdge;
  /** The I/O accounting of this device (BlockAcctStats). */
  readonly stats = new BlockAcctStats();

  constructor(
    readonly name: string,
    attach: (parent: NodeParent) => NodeEdge,
  ) {
    this.edge = attach(this);
  }

  get parentName(): string {
    return this.name;
  }

  get node(): BlockNode {
    return this.edge.node;
  }

  get length(): number {
    return this.edge.node.length;
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    if (!this.inRange(offset, buf.length)) return this.invalid(AcctType.Read, this.edge.read(offset, buf));
    const start = this.stats.start();
    try {
      await this.edge.read(offset, buf);
    } catch (error) {
      this.stats.failed(AcctType.Read, start);
      throw error;
    }
    this.stats.done(AcctType.Read, buf.length, start);
  }

  async write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    if (!this.inRange(offset, buf.length)) return this.invalid(AcctType.Write, this.edge.write(offset, buf, flags));
    const start = this.stats.start();
    try {
      await this.edge.write(offset, buf, flags);
    } catch (error) {
      this.stats.failed(AcctType.Write, start);
      throw error;
    }
    this.stats.done(AcctType.Write, buf.length, start);
  }

  /** Accounted as a write of `length` bytes, as QEMU's device models account write-zeroes. */
  async writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    if (!this.inRange(offset, length)) return this.invalid(AcctType.Write, this.edge.writeZeroes(offset, length, flags));
    const start = this.stats.start();
    try {
      await this.edge.writeZeroes(offset, length, flags);
    } catch (error) {
      this.stats.failed(AcctType.Write, start);
      throw error;
    }
    this.stats.done(AcctType.Write, length, start);
  }

  async discard(offset: number, length: number): Promise<void> {
    if (!this.inRange(offset, length)) return this.invalid(AcctType.Unmap, this.edge.discard(offset, length));
    const start = this.stats.start();
    try {
      await this.edge.discard(offset, length);
    } catch (error) {
      this.stats.failed(AcctType.Unmap, start);
      throw error;
    }
    this.stats.done(AcctType.Unmap, length, start);
  }

  async flush(): Promise<void> {
    const start = this.stats.start();
    try {
      await this.edge.flush();
    } catch (error) {
      this.stats.failed(AcctType.Flush, start);
      throw error;
    }
    this.stats.done(AcctType.Flush, 0, start);
  }

  truncate(length: number): Promise<void> {
    return this.edge.truncate(length);
  }

  blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    return this.edge.blockStatus(offset, length);
  }

  /** What a device model checks before submitting: a request inside the medium. */
  private inRange(offset: number, bytes: number): boolean {
    return Number.isSafeInteger(offset) && Number.isSafeInteger(bytes) && offset >= 0 && bytes >= 0 && offset + bytes <= this.length;
  }

  /** An invalid request is counted and still goes down, so the node refuses it with its own error. */
  private invalid(type: AcctType, request: Promise<void>): Promise<void> {
    this.stats.invalid(type);
    return request;
  }
}
