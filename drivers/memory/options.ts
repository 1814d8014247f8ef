/** Options of the memory driver. */
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const memoryOptions = Qapi.struct('BlockdevOptionsMemory', {
  size: Qapi.size({ description: 'size of the disk in bytes; only written data takes memory' }),
});

export type MemoryOptions = Static<typeof memoryOptions>;
