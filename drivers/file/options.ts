/** Options of the file driver (QEMU's BlockdevOptionsFile) and of file creation (BlockdevCreateOptionsFile). */
import { Qapi, type Static } from '../../core/schema/qapi.js';

/** Only threads: a thread pool (the native addon's, else Node's libuv pool) is the one I/O engine we have. */
export const BlockdevAioOptions = Qapi.enum('BlockdevAioOptions', ['threads']);

export const fileOptions = Qapi.struct('BlockdevOptionsFile', {
  filename: Qapi.str({ description: 'path of the image: a regular file or a block device' }),
  aio: Qapi.optional({ ...BlockdevAioOptions, description: 'AIO backend (a thread pool)', default: 'threads' }),
  locking: Qapi.optional({
    ...Qapi.enum('OnOffAuto', ['auto', 'on', 'off']),
    description: 'lock the image as QEMU does, against other processes and other opens (auto: when the native addon can)',
    default: 'auto',
  }),
  'aio-max-batch': Qapi.optional(
    Qapi.int({ description: "requests batched into one submission by Linux AIO and io_uring; accepted, as QEMU's threads backend does, and without effect", default: 0 }),
  ),
});

export type FileOptions = Static<typeof fileOptions>;

/** qemu-img create's options for a file, in QEMU's option list order (the order of its Formatting line). */
export const fileCreateOptions = Qapi.struct('BlockdevCreateOptionsFile', {
  filename: Qapi.str({ description: 'the file to create (an existing one is truncated)' }),
  size: Qapi.size({ description: 'size of the file in bytes' }),
  nocow: Qapi.optional(
    Qapi.bool({ description: 'set the no-copy-on-write attribute (btrfs); failure is ignored', default: false }),
  ),
  preallocation: Qapi.optional(
    Qapi.str({ description: 'off: sparse; falloc: reserve blocks with fallocate; full: write zeroes', default: 'off' }),
  ),
  extent_size_hint: Qapi.optional(
    Qapi.size({ description: 'extent size hint for the file system (XFS); at most 4 GiB - 1; checked and not applied' }),
  ),
});

export type FileCreateOptions = Static<typeof fileCreateOptions>;

/** QEMU's PreallocMode: `metadata` is accepted here and refused by the creation, with QEMU's message. */
export const PreallocModeAll = Qapi.enum('PreallocMode', ['off', 'metadata', 'falloc', 'full']);

/** A QMP `size`: like QEMU's, it accepts a negative integer (read as 2^64 plus it), which the creation then fails on. */
const qmpSize = (description: string) => Qapi.int({ qapiType: 'size', qapiExpects: 'uint64', description });

export const fileBlockdevCreateOptions = Qapi.struct('BlockdevCreateOptionsFile', {
  filename: Qapi.str({ description: 'the file to create (an existing one is truncated, unless a node has it open)' }),
  size: qmpSize('size of the file in bytes'),
  preallocation: Qapi.optional({
    ...PreallocModeAll,
    description: 'off: sparse; falloc: reserve blocks with fallocate; full: write zeroes; metadata: refused, as by QEMU',
    default: 'off',
  }),
  nocow: Qapi.optional(
    Qapi.bool({ description: 'set the no-copy-on-write attribute (btrfs); failure is ignored', default: false }),
  ),
  'extent-size-hint': Qapi.optional(
    qmpSize('extent size hint for the file system (XFS); at most 4 GiB - 1; accepted and not applied'),
  ),
});

export type FileBlockdevCreateOptions = Static<typeof fileBlockdevCreateOptions>;
