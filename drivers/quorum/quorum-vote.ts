/**
 * The vote (QEMU's quorum_vote and quorum_vote_error): children whose
 * copies are byte for byte equal form one version; the version with the
 * most members wins. QEMU keeps versions newest first and takes the first
 * largest, so on a tie the version seen last wins; so do we.
 */
import { type BlockIoError, toBlockIoError } from '../../core/errors.js';

/** One version of the data and the indexes of the children that returned it. */
export interface Version {
  readonly data: Buffer;
  readonly members: number[];
}

/** Groups the successful copies (undefined: that child failed) by content, in order of first appearance. */
export function countVotes(copies: readonly (Buffer | undefined)[]): Version[] {
  const versions: Version[] = [];
  copies.forEach((copy, index) => {
    if (copy === undefined) return;
    const same = versions.find((v) => v.data.equals(copy));
    if (same === undefined) versions.push({ data: copy, members: [index] });
    else same.members.push(index);
  });
  return versions;
}

/** The version with the most members (the last of equals); `versions` is not empty. */
export function winner<T extends { readonly members: readonly unknown[] }>(versions: readonly T[]): T {
  let best = versions[0]!;
  for (const version of versions) if (version.members.length >= best.members.length) best = version;
  return best;
}

/** The error most failing children returned, as QEMU votes on errno values; `errors` holds at least one. */
export function voteError(errors: readonly unknown[]): BlockIoError {
  const byErrno: { errno: string; members: BlockIoError[] }[] = [];
  for (const raw of errors) {
    if (raw === undefined) continue;
    const error = toBlockIoError(raw);
    const same = byErrno.find((e) => e.errno === error.errno);
    if (same === undefined) byErrno.push({ errno: error.errno, members: [error] });
    else same.members.push(error);
  }
  return winner(byErrno).members[0]!;
}
