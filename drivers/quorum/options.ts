/** Options of the quorum driver (QEMU's BlockdevOptionsQuorum), in QEMU's member order. */
import { BlockdevRef } from '../../core/block/blockdev-ref.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const quorumOptions = Qapi.struct('BlockdevOptionsQuorum', {
  blkverify: Qapi.optional(
    Qapi.bool({ description: 'two children, threshold 2: a read whose copies differ fails naming the first differing byte', default: false }),
  ),
  children: Qapi.list(BlockdevRef, {
    description: 'the replicas: node names, or the options of new nodes; they must all have the same size',
  }),
  'vote-threshold': Qapi.int({ description: 'how many children must agree for a read, or succeed for a write (1 to the number of children)' }),
  'rewrite-corrupted': Qapi.optional(
    Qapi.bool({ description: 'after a read that reached quorum, write the winning data over the children that disagreed', default: false }),
  ),
  'read-pattern': Qapi.optional(
    Qapi.enum('QuorumReadPattern', ['quorum', 'fifo'], {
      description: 'quorum: read every child and vote; fifo: read the first child, the next one if that fails',
      default: 'quorum',
    }),
  ),
});

export type QuorumOptions = Static<typeof quorumOptions>;
