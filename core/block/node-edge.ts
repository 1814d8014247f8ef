/**
 * Edges of the block graph. Every user of a node holds an edge to it: a
 * parent node (role 'file', 'backing' …), a backend, a job, an export. The
 * edge is what makes a node "in use", what drain walks upwards, and what
 * node replacement re-points, so a parent keeps doing I/O through the same
 * edge while the node under it changes (mirror completion, filter insertion).
 */
import type { BlockNode } from './block-node.js';
import type { CopyEnd, CopyRange } from './copy-range.js';
import type { PreallocMode } from './driver.js';
import type { BlockStatusExtent, WriteFlags, ZeroFlags } from './request.js';

/** Whoever holds an edge: a node, or a user outside the graph. */
export interface NodeParent {
  /** How QEMU messages name the user: a node name, a device name, a job id. */
  readonly parentName: string;
  readonly parentKind: 'node' | 'backend' | 'job' | 'export' | 'other';
  /** Why the node may not be deleted while this user holds it, e.g. 'block device is in use by block job: backup'. */
  readonly blocker?: string;
  /**
   * Whether this user writes to the node (QEMU: it holds the WRITE
   * permission), which keeps the node from being reopened read-only.
   * Undefined: it does not say (backends, jobs), and is not counted.
   */
  readonly writes?: boolean;
  /** A node under this user is being drained: stop issuing requests (a job pauses). */
  drainedBegin?(): void;
  /** Resolves once the user issues no more requests (a job parked at a pause point). */
  drainedPoll?(): Promise<void>;
  /** The drained section is over. */
  drainedEnd?(): void;
}

/** A driver's view of one of its children: the I/O it may do on it. */
export interface NodeChild {
  readonly role: string;
  /** The node currently behind the edge. */
  readonly node: BlockNode;
  readonly length: number;
  read(offset: number, buf: Buffer): Promise<void>;
  write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void>;
  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void>;
  discard(offset: number, length: number): Promise<void>;
  flush(): Promise<void>;
  truncate(length: number, preallocation?: PreallocMode): Promise<void>;
  blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]>;
  /** `offset` of this child as one end of a copy offload (copy-range.ts). */
  copyEnd(offset: number): CopyEnd;
  /** Passes a copy offload's source side on to this child, where its bytes lie at `offset`. */
  copyRangeFrom(offset: number, range: CopyRange): Promise<void>;
  /** Passes a copy offload's destination side on to this child, where the bytes go at `offset`. */
  copyRangeTo(offset: number, range: CopyRange): Promise<void>;
}

export class NodeEdge implements NodeChild {
  /**
   * Requests from a parent node are nested in the parent's own requests, and
   * a job pauses itself when drained: neither is held by a drained node, as
   * QEMU does not queue its jobs' requests. Backends and exports are held.
   */
  private readonly requestOptions: { nested: boolean };

  constructor(
    readonly parent: NodeParent,
    private current: BlockNode,
    readonly role: string,
  ) {
    this.requestOptions = { nested: parent.parentKind === 'node' || parent.parentKind === 'job' };
  }

  get node(): BlockNode {
    return this.current;
  }

  get length(): number {
    return this.current.length;
  }

  /** Points the edge at another node; only the graph does this. */
  retarget(node: BlockNode): void {
    this.current = node;
  }

  read(offset: number, buf: Buffer): Promise<void> {
    return this.current.read(offset, buf, this.requestOptions);
  }

  write(offset: number, buf: Buffer, flags: WriteFlags = {}): Promise<void> {
    return this.current.write(offset, buf, flags, this.requestOptions);
  }

  writeZeroes(offset: number, length: number, flags: ZeroFlags = {}): Promise<void> {
    return this.current.writeZeroes(offset, length, flags, this.requestOptions);
  }

  discard(offset: number, length: number): Promise<void> {
    return this.current.discard(offset, length, this.requestOptions);
  }

  flush(): Promise<void> {
    return this.current.flush(this.requestOptions);
  }

  truncate(length: number, preallocation?: PreallocMode): Promise<void> {
    return this.current.truncate(length, preallocation === undefined ? this.requestOptions : { ...this.requestOptions, preallocation });
  }

  blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    return this.current.blockStatus(offset, length, this.requestOptions);
  }

  copyEnd(offset: number): CopyEnd {
    return { node: this.current, offset, nested: this.requestOptions.nested };
  }

  copyRangeFrom(offset: number, range: CopyRange): Promise<void> {
    return this.current.copyRangeFrom({ ...range, from: this.copyEnd(offset) });
  }

  copyRangeTo(offset: number, range: CopyRange): Promise<void> {
    return this.current.copyRangeTo({ ...range, to: this.copyEnd(offset) });
  }
}
