/** Options of the file driver (QEMU's BlockdevOptionsFile) and of file creation (BlockdevCreateOptionsFile). */
import { Qapi, type Static } from '../../core/schema/qapi.js';

/** Only the thread pool: Node's libuv pool is the one I/O engine we have. */
export const BlockdevAioOptions = Qapi.enum('BlockdevAioOptions', ['threads']);

/** QEMU's PreallocMode without `metadata`, which only formats have (same values as the raw driver's). */
export const PreallocMode = Qapi.enum('PreallocMode', ['off', 'falloc', 'full']);

export const fileOptions = Qapi.struct('BlockdevOptionsFile', {
  filename: Qapi.str({ description: 'path of the image: a regular file or a block device' }),
  aio: Qapi.optional({ ...BlockdevAioOptions, description: 'AIO backend (the libuv thread pool)', default: 'threads' }),
});

export type FileOptions = Static<typeof fileOptions>;

export const fileCreateOptions = Qapi.struct('BlockdevCreateOptionsFile', {
  filename: Qapi.str({ description: 'the file to create (an existing one is truncated)' }),
  size: Qapi.size({ description: 'size of the file in bytes' }),
  preallocation: Qapi.optional({
    ...PreallocMode,
    description: 'off: sparse; falloc: reserve blocks with fallocate; full: write zeroes',
    default: 'off',
  }),
  nocow: Qapi.optional(
    Qapi.bool({ description: 'set the no-copy-on-write attribute (btrfs); failure is ignored', default: false }),
  ),
});

export type FileCreateOptions = Static<typeof fileCreateOptions>;
