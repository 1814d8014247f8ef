/**
 * Reads (QEMU's quorum_co_preadv). read-pattern=quorum reads every child
 * into a buffer of its own and votes: the version at least `vote-threshold`
 * children returned is the data; children that failed or disagreed are
 * reported, and with rewrite-corrupted the losers get the winning data
 * written back. read-pattern=fifo reads the children in order until one
 * succeeds.
 */
import { BlockIoError } from '../../core/errors.js';
import type { QuorumState } from './quorum-state.js';
import { countVotes, type Version, voteError, winner } from './quorum-vote.js';

export function quorumRead(state: QuorumState, offset: number, buf: Buffer): Promise<void> {
  return state.readPattern === 'fifo' ? readFifo(state, offset, buf) : readAndVote(state, offset, buf);
}

async function readFifo(state: QuorumState, offset: number, buf: Buffer): Promise<void> {
  let lastError: unknown;
  for (const child of state.children) {
    try {
      await child.read(offset, buf);
      return;
    } catch (error) {
      state.events.reportBad('read', offset, buf.length, child.node.nodeName, error);
      lastError = error;
    }
  }
  throw lastError;
}

async function readAndVote(state: QuorumState, offset: number, buf: Buffer): Promise<void> {
  const { children, events, threshold } = state;
  const copies = children.map(() => Buffer.allocUnsafe(buf.length));
  const results = await Promise.allSettled(children.map((child, i) => child.read(offset, copies[i]!)));
  const errors = results.map((r) => (r.status === 'rejected' ? (r.reason as unknown) : undefined));
  errors.forEach((error, i) => {
    if (error !== undefined) events.reportBad('read', offset, buf.length, children[i]!.node.nodeName, error);
  });
  if (errors.filter((e) => e === undefined).length < threshold) {
    events.reportFailure(offset, buf.length);
    throw voteError(errors);
  }
  const versions = countVotes(copies.map((copy, i) => (errors[i] === undefined ? copy : undefined)));
  if (state.blkverify && versions.length > 1) throw mismatch(offset, versions);
  const best = winner(versions);
  if (best.members.length < threshold) {
    events.reportFailure(offset, buf.length);
    throw new BlockIoError('EIO');
  }
  best.data.copy(buf);
  const losers = versions.filter((v) => v !== best).flatMap((v) => v.members);
  for (const i of losers) events.reportBad('read', offset, buf.length, children[i]!.node.nodeName);
  if (state.rewriteCorrupted && losers.length > 0) {
    // A correction attempt on data already known bad: its errors change nothing.
    await Promise.allSettled(losers.map((i) => children[i]!.write(offset, best.data)));
  }
}

/** blkverify: QEMU prints this and exits; a library fails the read instead. */
function mismatch(offset: number, versions: readonly Version[]): BlockIoError {
  const [a, b] = [versions[0]!.data, versions[1]!.data];
  let at = 0;
  while (a[at] === b[at]) at++;
  return new BlockIoError(
    'EIO',
    `quorum: offset=${offset} bytes=${a.length} contents mismatch at offset ${offset + at}`,
  );
}
