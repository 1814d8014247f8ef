/**
 * How a write-type request (write, write-zeroes, discard, truncate) passes
 * a node's seam once checked: tracked for its duration (an unaligned write
 * or write-zeroes owns its aligned range, as its read-modify-write must not
 * interleave with another write), through the node's beforeWrite and
 * afterWrite hooks, with driver errors turned into BlockIoError. BlockNode
 * calls it with its own tracker.
 */
import { toBlockIoError } from '../errors.js';
import { coveringRange, isAligned } from './alignment.js';
import type { BlockNode } from './block-node.js';
import type { RequestTracker, TrackedRequest } from './request-tracker.js';
import type { RequestOptions, WriteKind, WriteRequest, ZeroFlags } from './request.js';

/**
 * Tracks a write-like request to `node` around `perform`, with the
 * beforeWrite and afterWrite hooks. Without hooks and with nothing to wait
 * for, that is a single `then` (no async frame): this is the guest write
 * path.
 */
export function trackedWrite(
  node: BlockNode,
  tracker: RequestTracker,
  kind: WriteKind,
  offset: number,
  bytes: number,
  flags: ZeroFlags,
  options: RequestOptions,
  buffer: Buffer | undefined,
  perform: () => Promise<void>,
): Promise<void> {
  const align = node.limits.requestAlignment;
  const rmw =
    (kind === 'write' || kind === 'write-zeroes') && !isAligned(offset, bytes, align)
      ? coveringRange(offset, bytes, align, node.length)
      : undefined;
  const begun = tracker.begin(kind, offset, bytes, options.nested ?? false, rmw);
  if (begun instanceof Promise || node.hooks.beforeWrite.isUsed() || node.hooks.afterWrite.isUsed()) {
    return hookedWrite(node, tracker, kind, offset, bytes, flags, begun, buffer, perform);
  }
  let pending: Promise<void>;
  try {
    pending = perform();
  } catch (error) {
    tracker.end(begun);
    return Promise.reject(toBlockIoError(error));
  }
  return pending.then(
    () => tracker.end(begun),
    (error: unknown) => {
      tracker.end(begun);
      throw toBlockIoError(error);
    },
  );
}

/** The slow path: waits for the tracker, then runs the hooks around `perform`. */
async function hookedWrite(
  node: BlockNode,
  tracker: RequestTracker,
  kind: WriteKind,
  offset: number,
  bytes: number,
  flags: ZeroFlags,
  begun: TrackedRequest | Promise<TrackedRequest>,
  buffer: Buffer | undefined,
  perform: () => Promise<void>,
): Promise<void> {
  const request = begun instanceof Promise ? await begun : begun;
  try {
    const writeRequest: WriteRequest = buffer === undefined
      ? { node, kind, offset, bytes, flags }
      : { node, kind, offset, bytes, flags, buffer };
    if (node.hooks.beforeWrite.isUsed()) {
      const veto = await node.hooks.beforeWrite.promise(writeRequest);
      if (veto !== undefined) throw veto;
    }
    let failure: Error | undefined;
    try {
      await perform();
    } catch (error) {
      failure = toBlockIoError(error);
      throw failure;
    } finally {
      if (node.hooks.afterWrite.isUsed()) {
        await node.hooks.afterWrite.promise(writeRequest, failure === undefined ? {} : { error: failure });
      }
    }
  } finally {
    tracker.end(request);
  }
}
