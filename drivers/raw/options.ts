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

/** qemu-img create -f raw: the size, then the file's options, as QEMU appends them to its option list. */
export const rawCreateOptions = Qapi.struct('BlockdevCreateOptionsRaw', {
  filename: Qapi.str({ description: 'the file to create' }),
  size: Qapi.size({ description: 'size of the image in bytes' }),
  nocow: Qapi.optional(
    Qapi.bool({ description: 'set the no-copy-on-write attribute (btrfs); failure is ignored', default: false, qemuOptsProtocol: true }),
  ),
  preallocation: Qapi.optional(
    Qapi.str({ description: "how to allocate the file: off, falloc or full (the file's preallocation)", default: 'off', qemuOptsProtocol: true }),
  ),
  extent_size_hint: Qapi.optional(
    Qapi.size({ description: 'extent size hint for the file system (XFS); at most 4 GiB - 1; checked and not applied', qemuOptsProtocol: true }),
  ),
});

export type RawCreateOptions = Static<typeof rawCreateOptions>;
