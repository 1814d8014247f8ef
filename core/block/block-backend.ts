/**
 * A named backend (QEMU's BlockBackend): the device an application or guest
 * does its I/O through, e.g. `virtio0`. Its requests come from outside the
 * graph, so a drained node holds them; `device` arguments of commands accept
 * its name. The node behind it can change (mirror completion) while it keeps
 * its name.
 */
import type { BlockNode } from './block-node.js';
import type { NodeEdge, NodeParent } from './node-edge.js';
import type { BlockStatusExtent, WriteFlags, ZeroFlags } from './request.js';

export class BlockBackend implements NodeParent {
  readonly parentKind = 'backend';
  readonly edge: NodeEdge;

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
    return this.edge.read(offset, buf);
  }

  write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    return this.edge.write(offset, buf, flags);
  }

  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    return this.edge.writeZeroes(offset, length, flags);
  }

  discard(offset: number, length: number): Promise<void> {
    return this.edge.discard(offset, length);
  }

  flush(): Promise<void> {
    return this.edge.flush();
  }

  truncate(length: number): Promise<void> {
    return this.edge.truncate(length);
  }

  blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    return this.edge.blockStatus(offset, length);
  }
}
