/** Options of the null-co driver (QEMU's names and defaults, but reads return zeroes by default). */
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const nullOptions = Qapi.struct('BlockdevOptionsNull', {
  // QEMU's is an int (a negative one crashes qemu-storage-daemon 7.2): refused here in the words of its size parser.
  size: Qapi.optional(
    Qapi.int({
      minimum: 0,
      maximum: Number.MAX_SAFE_INTEGER,
      qapiExpects: 'a non-negative number below 2^64',
      description: 'size of the device in bytes',
      default: 1 << 30,
    }),
  ),
  'latency-ns': Qapi.optional(Qapi.uint64({ description: 'delay every request by this many nanoseconds', default: 0 })),
  'read-zeroes': Qapi.optional(
    Qapi.bool({ description: 'fill read buffers with zeroes (off: leave them untouched)', default: true }),
  ),
});

export type NullOptions = Static<typeof nullOptions>;
