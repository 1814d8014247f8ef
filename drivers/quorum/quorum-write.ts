/**
 * Writes, write-zeroes and flushes go to every child at once; the request
 * succeeds when at least `vote-threshold` children succeed, else it fails
 * with the error most children returned (QEMU's quorum_co_pwritev and
 * quorum_co_flush). Each failing child is reported; a failed write also
 * fails the quorum (QUORUM_FAILURE), a failed flush does not, as in QEMU.
 */
import type { NodeChild } from '../../core/block/node-edge.js';
import type { WriteFlags, ZeroFlags } from '../../core/block/request.js';
import type { QuorumState } from './quorum-state.js';
import { voteError } from './quorum-vote.js';

/** Runs `op` on every child; the errors by child index (undefined: success). */
async function onEveryChild(state: QuorumState, op: (child: NodeChild) => Promise<void>): Promise<unknown[]> {
  const results = await Promise.allSettled(state.children.map(op));
  return results.map((r) => (r.status === 'rejected' ? (r.reason as unknown) : undefined));
}

async function writeEverywhere(
  state: QuorumState,
  offset: number,
  bytes: number,
  op: (child: NodeChild) => Promise<void>,
): Promise<void> {
  const errors = await onEveryChild(state, op);
  errors.forEach((error, i) => {
    if (error !== undefined) state.events.reportBad('write', offset, bytes, state.children[i]!.node.nodeName, error);
  });
  if (errors.filter((e) => e === undefined).length < state.threshold) {
    state.events.reportFailure(offset, bytes);
    throw voteError(errors);
  }
}

export function quorumWrite(state: QuorumState, offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
  return writeEverywhere(state, offset, buf.length, (child) => child.write(offset, buf, flags));
}

export function quorumWriteZeroes(state: QuorumState, offset: number, length: number, flags: ZeroFlags): Promise<void> {
  return writeEverywhere(state, offset, length, (child) => child.writeZeroes(offset, length, flags));
}

export async function quorumFlush(state: QuorumState): Promise<void> {
  const errors = await onEveryChild(state, (child) => child.flush());
  errors.forEach((error, i) => {
    if (error !== undefined) state.events.reportBad('flush', 0, 0, state.children[i]!.node.nodeName, error);
  });
  if (errors.filter((e) => e === undefined).length < state.threshold) throw voteError(errors);
}
