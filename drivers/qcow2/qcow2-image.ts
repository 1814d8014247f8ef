/**
 * The state of one open qcow2 image, shared by every operation, and the
 * small I/O helpers everything uses: reads that see zeroes past the end of
 * the file, metadata writes behind the overlap check, flushes, in-place
 * header field updates, and corruption reporting.
 *
 * Concurrency: all metadata (L1, L2 cache, refcounts, header state) is
 * changed only under `lock`, and read under it too, except that reads and
 * writes in place look up cached L2 entries without it, in one synchronous
 * step (forEachCachedEntry); guest data moves outside it. `ranges`
 * serialises requests that touch the same guest clusters when one of them
 * changes their metadata (reads and writes in place share them).
 */
import type { CopyRange } from '../../core/block/copy-range.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import { BlockIoError } from '../../core/errors.js';
import { Mutex } from '../../core/util/mutex.js';
import type { TableCache } from './qcow2-cache.js';
import { type Geometry, HEADER_INCOMPAT_OFFSET, INCOMPAT_CORRUPT } from './qcow2-format.js';
import type { OverlapMode } from './options.js';
import { RangeLock } from './qcow2-range-lock.js';
import type { SnapshotTable } from './qcow2-snapshots.js';

/** The I/O this driver does on the image file: a node child, or a plain file while creating. */
export type ImageFile = Pick<
  NodeChild,
  'length' | 'read' | 'write' | 'writeZeroes' | 'discard' | 'flush' | 'truncate' | 'blockStatus'
> &
  Partial<Pick<NodeChild, 'copyRangeFrom' | 'copyRangeTo'>>;

/** Why clusters are freed; `pass-discard-*` decide which reach the file, `always` always does (QEMU's Qcow2DiscardType). */
export type DiscardType = 'never' | 'always' | 'request' | 'snapshot' | 'other';

export interface PendingFree {
  /** First and last host cluster whose refcount drops by one. */
  first: number;
  last: number;
  type: DiscardType;
}

export type MetadataKind = 'l2' | 'refblock';

export interface Qcow2Image {
  /** How messages name the image (the file name). */
  readonly name: string;
  readonly file: ImageFile;
  backing: NodeChild | undefined;
  /** The backing node came from the `backing` option rather than the header. */
  explicitBacking: boolean;
  /** The backing file name as the header records it (relative names stay relative), if any. */
  backingName: string | undefined;
  /** The backing format the header records, if any. */
  backingFormat: string | undefined;
  /** What a relative backing file name is relative to (the image file's name), once opened. */
  imagePath?: string;
  /** Changed only by amend's new refcount width (qcow2-refcount-order.ts). */
  g: Geometry;
  /** 2 or 3; amend changes it (qcow2-amend.ts). */
  version: number;
  /** Virtual size in bytes (a multiple of 512). */
  size: number;
  /** Changed only by a reopen (qcow2-reopen.ts). */
  writable: boolean;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  /** How compressed clusters are compressed: COMPRESSION_ZLIB or COMPRESSION_ZSTD (amend's downgrade turns an image with none to zlib). */
  compressionType: number;

  /** The active L1 table, as on disk (big-endian entries). */
  l1: Buffer;
  l1Offset: number;
  l1Size: number;
  /** Entries changed in memory but not yet written: [from, to). */
  l1Dirty: { from: number; to: number } | undefined;

  reftable: Buffer;
  reftableOffset: number;
  reftableClusters: number;

  snapshotsOffset: number;
  snapshots: SnapshotTable;
  bitmapDirectory: { offset: number; size: number } | undefined;

  readonly l2Cache: TableCache;
  readonly refcountCache: TableCache;
  /** L2 entries per cache entry (l2-cache-entry-size / 8). */
  readonly l2SliceEntries: number;

  readonly lock: Mutex;
  readonly ranges: RangeLock;
  /** Lowest cluster that may be free (QEMU's free_cluster_index). */
  freeClusterIndex: number;
  /** Where the next compressed cluster may be packed (0: start a new cluster). */
  freeByteOffset: number;
  /** Refcount decrements that wait until the pointers that were removed are on disk. */
  pendingFrees: PendingFree[];
  /** Something was written to the file since the last flush. */
  unflushed: boolean;

  lazyRefcounts: boolean;
  /**
   * The image was opened dirty for a check (its refcounts are not to be
   * trusted): closing keeps the dirty bit until a repair clears it.
   */
  keepDirty: boolean;
  readonly passDiscard: Readonly<Record<DiscardType, boolean>>;
  readonly overlap: OverlapMode;
  /** Host clusters holding active L2 tables and refcount blocks (for overlap checks). */
  readonly metadata: Map<number, MetadataKind>;
  /** Host clusters of L2 tables of snapshots, read on first need (overlap-check=all). */
  inactiveL2: Set<number> | undefined;

  /** Set once a fatal inconsistency was found; every later request fails with it. */
  failure: BlockIoError | undefined;
  /** Unknown autoclear bits were cleared (done before the first write). */
  preparedForWrite: boolean;
  /** Opened for a check: it reads the bitmap directory itself, and its bitmaps are not loaded. */
  readonly forCheck: boolean;
  /** The bitmaps were loaded and marked in use: autoclear bit 0 stays, they are stored at close (qcow2-bitmaps.ts). */
  bitmapsInUse: boolean;
  /** Whether normal clusters should be checked for holes in the file (metadata preallocation). */
  metadataPreallocation: boolean | undefined;
  /** Bytes of the file the host actually allocated, if the file node can tell (QEMU's detection of preallocation). */
  readonly fileAllocation: () => Promise<number | undefined>;
  cleanTimer: ReturnType<typeof setInterval> | undefined;
  /**
   * Set on images opened read-write: the file grows ahead of need, in steps
   * (one resize per step instead of one per allocation), and the slack is
   * cut when the image is closed. `end` is the end the image needs.
   */
  growAhead?: { end: number };
  /**
   * Set on images opened read-write over a file that grows zeroed: from
   * here on the file reads as zeroes for sure (past its length at open, and
   * past every write issued since). A cluster allocated there needs no
   * zeroes written around a partial write (QEMU zeroes it with one
   * write-zeroes instead: handle_alloc_space).
   */
  freshFrom?: number;
}

/** Where the file is known to read as zeroes, for an image that may write: see Qcow2Image.freshFrom. */
export function freshFromOpen(file: NodeChild): number | undefined {
  return file.node.capabilities.growsZeroed === true ? file.length : undefined;
}

export function newLocks(): { lock: Mutex; ranges: RangeLock } {
  return { lock: new Mutex(), ranges: new RangeLock() };
}

/** Reads `buf` from the file; what lies past its end reads as zeroes (QEMU does the same). */
export async function readFile(file: ImageFile, offset: number, buf: Buffer): Promise<void> {
  const inside = Math.max(0, Math.min(buf.length, file.length - offset));
  if (inside > 0) await file.read(offset, buf.subarray(0, inside));
  if (inside < buf.length) buf.fill(0, inside);
}

/**
 * The least an image file grows by ahead of need; steps grow with the file,
 * up to 1/8 of it. Each growth is a truncate that waits behind the I/O queued
 * on the thread pool, so a conversion of 1 GiB should take tens, not
 * hundreds; what is ahead is a hole, and cut at close.
 */
const GROW_STEP = 8 << 20;

/** Grows the file so that `[0, end)` exists; it never shrinks. Called with the lock held. */
export async function growFile(image: Qcow2Image, end: number): Promise<void> {
  const length = image.file.length;
  const ahead = image.growAhead;
  if (ahead === undefined) {
    if (end > length) await image.file.truncate(end);
    return;
  }
  if (end > length) {
    const cs = image.g.clusterSize;
    const step = Math.max(GROW_STEP, Math.floor(length / 8));
    await image.file.truncate(Math.ceil(Math.max(end, length + step) / cs) * cs);
  }
  // Only once the file has grown: an end that could not be reached must not keep the slack at close.
  noteFileEnd(image, end);
}

/** Notes that the image needs the file up to `end` (what trimFile keeps); growFile's part without I/O. */
export function noteFileEnd(image: Qcow2Image, end: number): void {
  const ahead = image.growAhead;
  if (ahead !== undefined && end > ahead.end) ahead.end = end;
}

/** Cuts what growFile added ahead of need (the image is being closed; the slack holds nothing). */
export async function trimFile(image: Qcow2Image): Promise<void> {
  const ahead = image.growAhead;
  if (ahead !== undefined && image.file.length > ahead.end) await image.file.truncate(ahead.end);
}

/**
 * Writes and notes that a flush is due (after the write: a flush that began
 * meanwhile may miss it); `after` runs then too, done or failed (the guest
 * write path releases its clusters there, without a promise of its own).
 */
export function writeFile(image: Qcow2Image, offset: number, buf: Buffer, after?: () => void): Promise<void> {
  return noteWrite(image, image.file.write(noteIssued(image, offset, buf.length), buf), after);
}

/** As writeFile, the bytes copied into the file from another node (copy offloading: the file child's copyRangeTo). */
export function copyIntoFile(image: Qcow2Image, offset: number, range: CopyRange): Promise<void> {
  const { file } = image;
  if (file.copyRangeTo === undefined) return Promise.reject(new BlockIoError('ENOTSUP', 'qcow2: this image file cannot offload copies'));
  return noteWrite(image, file.copyRangeTo(noteIssued(image, offset, range.length), range));
}

/** Notes a write to the file as it is issued (a cluster freed after a failed write may hold part of it); returns `offset`. */
function noteIssued(image: Qcow2Image, offset: number, length: number): number {
  if (image.freshFrom !== undefined && offset + length > image.freshFrom) image.freshFrom = offset + length;
  return offset;
}

/** Notes that a flush is due once `written` settles (a flush that began meanwhile may miss it); `after` runs then too. */
function noteWrite(image: Qcow2Image, written: Promise<void>, after?: () => void): Promise<void> {
  const done = (): void => {
    image.unflushed = true;
    after?.();
  };
  return written.then(done, (error: unknown) => {
    done();
    throw error;
  });
}

/** Flushes; writes that complete while it runs mark the file unflushed again. */
export async function flushFile(image: Qcow2Image): Promise<void> {
  image.unflushed = false;
  await image.file.flush();
}

/** Fails if the image was marked corrupt while open. */
export function checkUsable(image: Qcow2Image): void {
  if (image.failure !== undefined) throw image.failure;
}

/**
 * Reports an inconsistency found in the metadata, as qcow2_signal_corruption:
 * a writable image is marked corrupt (incompatible bit 1) and refuses all
 * further requests; a read-only one just fails this request.
 */
export async function signalCorruption(image: Qcow2Image, message: string): Promise<never> {
  if (!image.writable) throw new BlockIoError('EIO', `qcow2: Image is corrupt: ${message}`);
  if (image.failure === undefined) {
    image.failure = new BlockIoError(
      'EIO',
      `qcow2: Marking image as corrupt: ${message}; further corruption events will be suppressed`,
    );
    image.incompatible |= INCOMPAT_CORRUPT;
    if (image.version >= 3) {
      const field = Buffer.alloc(8);
      field.writeBigUInt64BE(image.incompatible);
      // Best effort: the request fails with the corruption whether or not the bit reached the disk.
      await writeFile(image, HEADER_INCOMPAT_OFFSET, field).then(() => flushFile(image)).catch(() => undefined);
    }
  }
  throw image.failure;
}

/** Writes a header field in place and flushes (the small header updates QEMU does with pwrite_sync). */
export async function writeHeaderField(image: Qcow2Image, offset: number, field: Buffer): Promise<void> {
  await writeFile(image, offset, field);
  await flushFile(image);
}

/** Writes the incompatible-features field in place (dirty and corrupt bits). */
export async function writeIncompatible(image: Qcow2Image, value: bigint): Promise<void> {
  const field = Buffer.alloc(8);
  field.writeBigUInt64BE(value);
  await writeHeaderField(image, HEADER_INCOMPAT_OFFSET, field);
  image.incompatible = value;
}
