/**
 * Options of the qcow2 format driver (QEMU's BlockdevOptionsQcow2, members
 * in QEMU's order; `encrypt` and `data-file` are left out because this
 * driver refuses encrypted images and external data files) and of image
 * creation (qemu-img create -f qcow2 -o …, QEMU's option names).
 */
import { BlockdevRef, BlockdevRefOrNull } from '../../core/block/blockdev-ref.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const Qcow2OverlapCheckMode = Qapi.enum('Qcow2OverlapCheckMode', ['none', 'constant', 'cached', 'all']);
export type OverlapMode = Static<typeof Qcow2OverlapCheckMode>;

/** The cache sizes are QAPI ints that QEMU reads as QemuOpts sizes: a negative one is refused in those words. */
const CACHE_BYTES = { minimum: 0, qapiExpects: 'a non-negative number below 2^64' };

export const qcow2Options = Qapi.struct('BlockdevOptionsQcow2', {
  file: { ...BlockdevRef, description: 'the node holding the image: a node name, or the options of a new node' },
  backing: Qapi.optional({
    ...BlockdevRefOrNull,
    description:
      "the backing node; default: the header's backing file, opened read-only with the header's backing format; null: none",
  }),
  'lazy-refcounts': Qapi.optional(
    Qapi.bool({
      description: "postpone refcount updates, with the image marked dirty until closed; default: the image's lazy_refcounts (v3 only)",
    }),
  ),
  'pass-discard-request': Qapi.optional(
    Qapi.bool({ description: 'discard the clusters a guest discard or unmapping write-zeroes frees in the file too', default: true }),
  ),
  'pass-discard-snapshot': Qapi.optional(
    Qapi.bool({
      description: 'discard clusters freed by snapshot operations; this driver performs none, so it changes nothing',
      default: true,
    }),
  ),
  'pass-discard-other': Qapi.optional(
    Qapi.bool({ description: 'discard other freed clusters (old L1, L2 and refcount tables) in the file too', default: false }),
  ),
  'overlap-check': Qapi.optional({
    ...Qcow2OverlapCheckMode,
    description: 'which metadata every write is checked against before it reaches the file',
    default: 'cached',
  }),
  'cache-size': Qapi.optional(
    Qapi.int({ ...CACHE_BYTES, description: 'combined maximum of the L2 table and refcount block caches, in bytes' }),
  ),
  'l2-cache-size': Qapi.optional(
    Qapi.int({ ...CACHE_BYTES, description: 'maximum L2 table cache size in bytes; default: enough for the whole image, at most 32 MiB' }),
  ),
  'l2-cache-entry-size': Qapi.optional(
    Qapi.int({
      ...CACHE_BYTES,
      description: 'bytes per L2 cache entry: a power of two from 512 to the cluster size; default: the cluster size, or 4 KiB when the cache cannot hold every table',
    }),
  ),
  'refcount-cache-size': Qapi.optional(
    Qapi.int({ ...CACHE_BYTES, description: 'maximum refcount block cache size in bytes; default: 4 clusters' }),
  ),
  'cache-clean-interval': Qapi.optional(
    // A negative one is, as a C unsigned, too big (buildImage says so, as QEMU does).
    Qapi.int({ description: 'seconds after which unused cache entries are dropped; 0: never', default: 600 }),
  ),
});

export type Qcow2Options = Static<typeof qcow2Options>;

/**
 * qemu-img's options for a new qcow2 image (create, convert -o, measure -o),
 * in QEMU's option list order: the format's, then the file's. The strings
 * QEMU reads as enums only when creating or measuring (compat,
 * compression_type, preallocation) are checked there, as QEMU checks them.
 */
export const qcow2CreateOptions = Qapi.struct('Qcow2CreateOptions', {
  filename: Qapi.str({ description: 'the file to create' }),
  cluster_size: Qapi.optional(
    Qapi.size({ description: 'cluster size: a power of two from 512 to 2 MiB', default: 65536, qemuOptsDefault: '65536' }),
  ),
  extended_l2: Qapi.optional(
    Qapi.bool({ description: 'extended L2 entries (subclusters): only off can be created here', default: false, qemuOptsDefault: 'off' }),
  ),
  preallocation: Qapi.optional(
    Qapi.str({
      description: 'off; metadata: L2 tables and clusters for the whole image; falloc, full: those clusters also reserved or written by the file',
      default: 'off',
    }),
  ),
  compression_type: Qapi.optional(
    Qapi.str({ description: 'zlib, or zstd (compat 1.1 only)', default: 'zlib', qemuOptsDefault: 'zlib' }),
  ),
  size: Qapi.optional(
    Qapi.size({ description: 'virtual size in bytes, rounded up to 512; default: the size of the backing file' }),
  ),
  compat: Qapi.optional(
    Qapi.str({ description: 'qcow2 version: 0.10 (or v2) is v2, 1.1 (or v3) is v3', default: '1.1' }),
  ),
  backing_file: Qapi.optional(
    Qapi.str({ description: 'backing file name, stored as given (relative names are relative to the image)' }),
  ),
  backing_fmt: Qapi.optional(Qapi.str({ description: 'format of the backing file; required with backing_file' })),
  lazy_refcounts: Qapi.optional(
    Qapi.bool({ description: 'set the lazy refcounts feature (compat 1.1 only)', default: false, qemuOptsDefault: 'off' }),
  ),
  refcount_bits: Qapi.optional(
    Qapi.int({
      minimum: 0,
      description: 'refcount width: a power of two up to 64 (other than 16 needs compat 1.1)',
      default: 16,
      qemuOptsDefault: '16',
    }),
  ),
  nocow: Qapi.optional(
    Qapi.bool({ description: "the file's no-copy-on-write attribute (btrfs); failure is ignored", default: false, qemuOptsProtocol: true }),
  ),
  extent_size_hint: Qapi.optional(
    Qapi.size({ description: "the file's extent size hint (XFS); at most 4 GiB - 1; checked and not applied", qemuOptsProtocol: true }),
  ),
});

export type Qcow2CreateOptions = Static<typeof qcow2CreateOptions>;

/** QEMU 7.2's BlockdevDriver: any of its names may be recorded as a backing format. */
export const BlockdevDriver = Qapi.enum('BlockdevDriver', [
  'blkdebug', 'blklogwrites', 'blkreplay', 'blkverify', 'bochs', 'cloop', 'compress', 'copy-before-write',
  'copy-on-read', 'dmg', 'file', 'snapshot-access', 'ftp', 'ftps', 'gluster', 'host_cdrom', 'host_device',
  'http', 'https', 'iscsi', 'luks', 'nbd', 'nfs', 'null-aio', 'null-co', 'nvme', 'parallels', 'preallocate',
  'qcow', 'qcow2', 'qed', 'quorum', 'raw', 'rbd', 'replication', 'ssh', 'throttle', 'vdi', 'vhdx', 'vmdk',
  'vpc', 'vvfat',
]);

/** A QMP `size`: like QEMU's, it accepts a negative integer (read as 2^64 plus it), which the creation then fails on. */
const qmpSize = (description: string) => Qapi.int({ qapiType: 'size', qapiExpects: 'uint64', description });

/**
 * QEMU's BlockdevCreateOptionsQcow2, members in QEMU's order. What this
 * driver cannot make (external data files, extended L2 entries,
 * encryption) is accepted by the schema, as by QEMU's,
 * and refused by the job with a message saying so.
 */
export const qcow2BlockdevCreateOptions = Qapi.struct('BlockdevCreateOptionsQcow2', {
  file: { ...BlockdevRef, description: 'the node to format: a node name, or the options of a node opened for the creation' },
  'data-file': Qapi.optional({ ...BlockdevRef, description: 'external data file: refused (not supported)' }),
  'data-file-raw': Qapi.optional(Qapi.bool({ description: 'the data file is a raw image: needs data-file' })),
  'extended-l2': Qapi.optional(Qapi.bool({ description: 'subclusters: only false is supported', default: false })),
  size: qmpSize('virtual size in bytes: a multiple of 512'),
  version: Qapi.optional(
    Qapi.enum('BlockdevQcow2Version', ['v2', 'v3'], { description: 'v2 is compat 0.10, v3 compat 1.1', default: 'v3' }),
  ),
  'backing-file': Qapi.optional(Qapi.str({ description: 'backing file name to record, as given (not opened)' })),
  'backing-fmt': Qapi.optional({ ...BlockdevDriver, description: 'backing format to record; needs backing-file' }),
  encrypt: Qapi.optional(Qapi.any({ description: 'encryption: refused (not supported)' })),
  'cluster-size': Qapi.optional(qmpSize('cluster size: a power of two from 512 to 2 MiB; default: 65536')),
  preallocation: Qapi.optional({
    ...Qapi.enum('PreallocMode', ['off', 'metadata', 'falloc', 'full']),
    description: 'off; metadata: L2 tables and clusters for the whole image; falloc, full: those clusters also reserved or written by the file',
    default: 'off',
  }),
  'lazy-refcounts': Qapi.optional(Qapi.bool({ description: 'set the lazy refcounts feature (v3 only)', default: false })),
  'refcount-bits': Qapi.optional(
    Qapi.int({ description: 'refcount width: a power of two up to 64 (other than 16 needs v3)', default: 16 }),
  ),
  'compression-type': Qapi.optional(
    Qapi.enum('Qcow2CompressionType', ['zlib', 'zstd'], { description: 'zlib, or zstd (version v3 only)', default: 'zlib' }),
  ),
});

export type Qcow2BlockdevCreateOptions = Static<typeof qcow2BlockdevCreateOptions>;
