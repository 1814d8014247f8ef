/**
 * quorum: a node over N replicas (QEMU's block/quorum.c). Writes go to
 * every child and need `vote-threshold` successes; reads vote (or, with
 * read-pattern=fifo, take the first child that answers). Failing and
 * outvoted children are reported with QUORUM_REPORT_BAD, failed requests
 * with QUORUM_FAILURE. A child only the quorum uses may be replaced by a
 * mirror (`replaces`), which is how a broken replica is repaired.
 */
import type { BlockNode } from '../../core/block/block-node.js';
import { defineBlockDriver, type DriverOpenContext } from '../../core/block/driver.js';
import type { BlockStatusExtent } from '../../core/block/request.js';
import { BlockLayerError, strerror } from '../../core/errors.js';
import type { QuorumEvents } from './quorum-events.js';
import { quorumRead } from './quorum-read.js';
import type { QuorumState } from './quorum-state.js';
import { quorumFlush, quorumWrite, quorumWriteZeroes } from './quorum-write.js';
import { type QuorumOptions, quorumOptions } from './options.js';

/** Where a quorum node's events go, given its node name. */
export type QuorumEventsFactory = (nodeName: string) => QuorumEvents;

/** QEMU's quorum_open checks, in its order and with its messages. */
function checkOptions(options: QuorumOptions): void {
  const count = options.children.length;
  const threshold = options['vote-threshold'];
  if (count < 1) throw new BlockLayerError('Number of provided children must be 1 or more');
  if (threshold < 1) throw new BlockLayerError("Parameter 'vote-threshold' expects a value >= 1");
  if (threshold > count) throw new BlockLayerError('threshold may not exceed children count');
  // QEMU reads blkverify and rewrite-corrupted only for read-pattern=quorum.
  if ((options['read-pattern'] ?? 'quorum') !== 'quorum') return;
  if ((options.blkverify ?? false) && (count !== 2 || threshold !== 2)) {
    throw new BlockLayerError('blkverify=on can only be set if there are exactly two files and vote-threshold is 2');
  }
  if ((options['rewrite-corrupted'] ?? false) && (options.blkverify ?? false)) {
    throw new BlockLayerError('rewrite-corrupted=on cannot be used with blkverify=on');
  }
}

function quorumOpen(ctx: DriverOpenContext<QuorumOptions>, events: QuorumEvents): QuorumState {
  const { options } = ctx;
  checkOptions(options);
  const children = options.children.map((_, i) => ctx.children.get(`children.${i}`)!);
  // QEMU's getlength fails unless every child has the same size, and opening needs the size.
  if (children.some((c) => c.length !== children[0]!.length)) {
    throw new BlockLayerError(`Could not refresh total sector count: ${strerror('EIO')}`);
  }
  const fifo = options['read-pattern'] === 'fifo';
  return {
    children,
    threshold: options['vote-threshold'],
    blkverify: !fifo && (options.blkverify ?? false),
    rewriteCorrupted: !fifo && (options['rewrite-corrupted'] ?? false),
    readPattern: fifo ? 'fifo' : 'quorum',
    events,
  };
}

/** The strictest of the children's limits, as QEMU merges the limits of data children. */
function quorumLimits(state: QuorumState): { requestAlignment: number; maxTransfer: number } {
  const limits = state.children.map((c) => c.node.limits);
  return {
    requestAlignment: Math.max(...limits.map((l) => l.requestAlignment)),
    maxTransfer: Math.min(...limits.map((l) => l.maxTransfer)),
  };
}

/**
 * Zero where every child reads as zeroes (for the shortest such run), data
 * otherwise (for the longest data run), as QEMU's quorum_co_block_status;
 * a child that cannot tell is reported and makes the whole range data.
 */
async function quorumBlockStatus(state: QuorumState, offset: number, length: number): Promise<BlockStatusExtent[]> {
  let zeroBytes = length;
  let dataBytes = 0;
  for (const child of state.children) {
    let first: BlockStatusExtent;
    try {
      first = (await child.blockStatus(offset, length))[0]!;
    } catch (error) {
      state.events.reportBad('read', offset, length, child.node.nodeName, error);
      dataBytes = length;
      break;
    }
    const bytes = first.offset + first.length - offset;
    if (first.zero) zeroBytes = Math.min(zeroBytes, bytes);
    else dataBytes = Math.max(dataBytes, bytes);
  }
  return dataBytes > 0
    ? [{ offset, length: dataBytes, data: true, zero: false, allocated: true }]
    : [{ offset, length: zeroBytes, data: false, zero: true, allocated: true }];
}

/**
 * Replacing a child by a copy of the quorum cannot change what the quorum
 * shows, but can change what another user of that child sees: only a child
 * the quorum alone uses may go (QEMU's quorum_recurse_can_replace). A hold
 * that only keeps jobs off the node (a mirror's `replaces` blocker, QEMU's
 * bdrv_ref) is not a user.
 */
function quorumCanReplace(state: QuorumState, toReplace: BlockNode): boolean {
  const edge = state.children.find((c) => c.node === toReplace);
  if (edge === undefined) return false;
  const users = [...toReplace.parents].filter((e) => e.parent.parentKind !== 'other');
  return users.length === 1 && users[0] === edge;
}

export function createQuorumDriver(eventsFor: QuorumEventsFactory) {
  return defineBlockDriver<QuorumOptions, QuorumState>({
    name: 'quorum',
    kind: 'format',
    summary: 'replicated node: writes to every child, reads voted on by them',
    options: quorumOptions,
    children: [{ name: 'children', required: true, list: true }],
    capabilities: { canZero: true, canDiscard: false, canFua: false, concurrency: 'parallel' },
    flushesChildren: true,
    open: async (ctx) => quorumOpen(ctx, eventsFor(ctx.nodeName)),
    getLength: (state) => state.children[0]!.length,
    limits: quorumLimits,
    read: quorumRead,
    write: quorumWrite,
    writeZeroes: quorumWriteZeroes,
    flush: quorumFlush,
    blockStatus: quorumBlockStatus,
    recurseCanReplace: quorumCanReplace,
  });
}

/** The definition with events dropped: for the docs tables and introspection without a layer. */
export const quorumDriver = createQuorumDriver(() => ({ reportBad: () => undefined, reportFailure: () => undefined }));
