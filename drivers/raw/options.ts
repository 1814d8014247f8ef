/** Options of the raw format driver (QEMU's BlockdevOptionsRaw) and of raw image creation. */
import { BlockdevRef } from '../../core/block/blockdev-ref.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const rawOptions = Qapi.struct('BlockdevOptionsRaw', {
  file: { ...BlockdevRef, description: 'the node holding the bytes: a node name, or the options of a new node' },
  offset: Qapi.optional(Qapi.size({ description: 'where the image starts inside the file', default: 0 })),
  size: Qapi.optional(
    Qapi.size({ description: 'size of the image (a multiple of 512); default: the rest of the file' }),
  ),
});

export type RawOptions = Static<typeof rawOptions>;

export const rawCreateOptions = Qapi.struct('BlockdevCreateOptionsRaw', {
  filename: Qapi.str({ description: 'the file to create' }),
  size: Qapi.size({ description: 'size of the image in bytes' }),
  preallocation: Qapi.optional(
    Qapi.enum('PreallocMode', ['off', 'falloc', 'full'], { description: 'how to allocate the file', default: 'off' }),
  ),
});

export type RawCreateOptions = Static<typeof rawCreateOptions>;
