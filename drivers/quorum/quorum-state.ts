/** What one quorum node holds: its children in order, its rules, and where its events go. */
import type { NodeChild } from '../../core/block/node-edge.js';
import type { QuorumEvents } from './quorum-events.js';

export interface QuorumState {
  /** `children.0`, `children.1` …, in the order the options list them. */
  readonly children: readonly NodeChild[];
  readonly threshold: number;
  readonly blkverify: boolean;
  readonly rewriteCorrupted: boolean;
  readonly readPattern: 'quorum' | 'fifo';
  readonly events: QuorumEvents;
}
