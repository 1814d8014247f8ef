/** Options of the null-co driver (QEMU's names and defaults, but reads return zeroes by default). */
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const nullOptions = Qapi.struct('BlockdevOptionsNull', {
  size: Qapi.optional(Qapi.size({ description: 'size of the device in bytes', default: 1 << 30 })),
  'latency-ns': Qapi.optional(Qapi.uint64({ description: 'delay every request by this many nanoseconds', default: 0 })),
  'read-zeroes': Qapi.optional(
    Qapi.bool({ description: 'fill read buffers with zeroes (off: leave them untouched)', default: true }),
  ),
});

export type NullOptions = Static<typeof nullOptions>;
