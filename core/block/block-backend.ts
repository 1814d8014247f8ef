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

  read(offset: number, buf: Buffer): Promise<void> {
    if (!this.inRange(offset, buf.length)) return this.invalid(AcctType.Read, this.edge.read(offset, buf));
    return this.accounted(AcctType.Read, buf.length, () => this.edge.read(offset, buf));
  }

  write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    if (!this.inRange(offset, buf.length)) return this.invalid(AcctType.Write, this.edge.write(offset, buf, flags));
    return this.accounted(AcctType.Write, buf.length, () => this.edge.write(offset, buf, flags));
  }

  /** Accounted as a write of `length` bytes, as QEMU's device models account write-zeroes. */
  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    if (!this.inRange(offset, length)) return this.invalid(AcctType.Write, this.edge.writeZeroes(offset, length, flags));
    return this.accounted(AcctType.Write, length, () => this.edge.writeZeroes(offset, length, flags));
  }

  discard(offset: number, length: number): Promise<void> {
    if (!this.inRange(offset, length)) return this.invalid(AcctType.Unmap, this.edge.discard(offset, length));
    return this.accounted(AcctType.Unmap, length, () => this.edge.discard(offset, length));
  }

  flush(): Promise<void> {
    return this.accounted(AcctType.Flush, 0, () => this.edge.flush());
  }

  truncate(length: number): Promise<void> {
    return this.edge.truncate(length);
  }

  blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    return this.edge.blockStatus(offset, length);
  }

  /** Runs `request`, accounted as done or failed (one `then`, no async frame: devices carry guest I/O). */
  private accounted(type: AcctType, bytes: number, request: () => Promise<void>): Promise<void> {
    const start = this.stats.start();
    return request().then(
      () => this.stats.done(type, bytes, start),
      (error: unknown) => {
        this.stats.failed(type, start);
        throw error;
      },
    );
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
