/**
 * The global hooks, declared in one place (webpack's `compiler.hooks`).
 * Plugins tap them through a HookContribution; per-node hooks live on
 * BlockNode.hooks. Each tap is named after its plugin, so `hook.taps` shows
 * who listens.
 */
import { AsyncSeriesHook, SyncHook } from 'tapable';
import type { BlockNode } from '../block/block-node.js';
import type { JobHandle, JobStatus } from '../job/job-handle.js';
import { injectable } from 'inversify';

/** An event as QMP sends it (timestamp added by the sender). */
export interface BlockLayerEvent {
  readonly event: string;
  readonly data?: Record<string, unknown>;
  /** Wall clock at emission: seconds and microseconds since the epoch. */
  readonly timestamp: { seconds: number; microseconds: number };
}

export interface CommandExecution {
  readonly command: string;
  readonly arguments: Record<string, unknown>;
  /** The result, when the command succeeded. */
  readonly result?: unknown;
  /** The error, when it failed. */
  readonly error?: Error;
}

@injectable()
export class BlockLayerHooks {
  /**
   * A node of a blockdev-add tree or a backing file was opened, before it
   * is announced (nodeAdded): taps may read from it (the BitmapStore loads
   * persistent bitmaps). A failure fails the open. A job's filter node
   * skips it: it has nothing to read.
   */
  readonly nodeOpened = new AsyncSeriesHook<[BlockNode]>(['node'], 'nodeOpened');
  /** A node is about to close, idle and flushed, its driver still open: taps may write to it (the BitmapStore stores them). */
  readonly nodeClosing = new AsyncSeriesHook<[BlockNode]>(['node'], 'nodeClosing');
  /** A node was opened and entered the graph (nested children first). */
  readonly nodeAdded = new SyncHook<[BlockNode]>(['node'], 'nodeAdded');
  /** A node left the graph and was closed. */
  readonly nodeRemoved = new SyncHook<[BlockNode]>(['node'], 'nodeRemoved');
  /** The users of `from` now use `to` (filter insertion, mirror completion). */
  readonly nodeReplaced = new SyncHook<[BlockNode, BlockNode]>(['from', 'to'], 'nodeReplaced');
  /** The device `name` on `node` went away (QEMU's device removal: the block jobs using the node are cancelled). */
  readonly backendDetached = new SyncHook<[string, BlockNode]>(['name', 'node'], 'backendDetached');

  /** A job was created (before it runs). */
  readonly jobCreated = new SyncHook<[JobHandle]>(['job'], 'jobCreated');
  /** A job's status changed; `previous` is where it came from. */
  readonly jobStatusChanged = new SyncHook<[JobHandle, JobStatus]>(['job', 'previous'], 'jobStatusChanged');

  /** Every event, as QMP clients receive it. */
  readonly event = new SyncHook<[BlockLayerEvent]>(['event'], 'event');
  /** A command finished (through QMP or the API). */
  readonly commandExecuted = new SyncHook<[CommandExecution]>(['execution'], 'commandExecuted');

  constructor() {
    Object.freeze(this);
  }
}

/** Builds an event stamped with the current wall clock. */
export function makeEvent(event: string, data?: Record<string, unknown>): BlockLayerEvent {
  const nowMs = performance.timeOrigin + performance.now();
  const timestamp = { seconds: Math.floor(nowMs / 1000), microseconds: Math.floor((nowMs % 1000) * 1000) };
  return data === undefined ? { timestamp, event } : { timestamp, event, data };
}
