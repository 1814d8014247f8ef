/** Request shapes shared by nodes, drivers and hooks. */
import type { BlockNode } from './block-node.js';

export interface WriteFlags {
  /** Force unit access: the data is on stable storage when the request completes. */
  fua?: boolean;
  /** Store the data compressed (drivers with `canCompress`; backup's `compress`). */
  compressed?: boolean;
}

export interface ZeroFlags extends WriteFlags {
  /** The range may be deallocated rather than written (QEMU's BDRV_REQ_MAY_UNMAP). */
  mayUnmap?: boolean;
  /** Fail with ENOTSUP instead of falling back to writing zeroes (BDRV_REQ_NO_FALLBACK). */
  noFallback?: boolean;
}

export type WriteKind = 'write' | 'write-zeroes' | 'discard' | 'truncate';
export type RequestKind = 'read' | WriteKind | 'flush' | 'block-status';

/**
 * A request that changes the node's contents, as the `beforeWrite` and
 * `afterWrite` hooks see it. For truncate, `offset` is the new length and
 * `bytes` the number of bytes that disappear (0 when growing).
 */
export interface WriteRequest {
  readonly node: BlockNode;
  readonly kind: WriteKind;
  readonly offset: number;
  readonly bytes: number;
  /** The data, for kind 'write'; absent for an offloaded copy (copy-range.ts), whose bytes never pass through a buffer. */
  readonly buffer?: Buffer;
  readonly flags: ZeroFlags;
}

export interface WriteResult {
  /** Set when the driver failed; the bytes may have been partly written. */
  readonly error?: Error;
}

/**
 * One contiguous range with uniform status. `data`: reads come from stored
 * data; `zero`: reads return zeroes; `allocated`: this node (not a backing
 * node) determines the contents.
 */
export interface BlockStatusExtent {
  offset: number;
  length: number;
  data: boolean;
  zero: boolean;
  allocated: boolean;
  /**
   * Where the data of `offset` lies in the node's file child, when it is
   * stored there as is (qemu-img map's `offset`); absent for compressed
   * or generated data.
   */
  hostOffset?: number;
}

/** Per-request options used by the graph itself. */
export interface RequestOptions {
  /**
   * Issued by a parent node while serving one of its own requests. Nested
   * requests pass a drained node (the parent's request is what drain waits
   * for); requests from backends, jobs and the API are held.
   */
  nested?: boolean;
}
