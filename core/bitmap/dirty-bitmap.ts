/**
 * A dirty bitmap of a node (QEMU's BdrvDirtyBitmap): one bit per
 * `granularity` bytes, set where the node was written while the bitmap was
 * enabled, since it was created or last cleared. The BitmapStore keeps the
 * named ones and records the node's writes into them; NBD exports serve
 * them as `qemu:dirty-bitmap:NAME`; backup copies what they mark
 * (sync=bitmap), freezing the bitmap while a successor records the writes
 * made meanwhile.
 *
 * Sizes and ranges are bytes. A bit covers a whole granule, so `count` is
 * the number of set bits times the granularity, the last granule counted
 * whole as QEMU counts it.
 */
import type { BlockNode } from '../block/block-node.js';
import { BlockLayerError } from '../errors.js';
import type { BlockDirtyInfoValue } from './bitmap-schema.js';
import { ClusterBitmap } from './cluster-bitmap.js';

/** Which of QEMU's bdrv_dirty_bitmap_check() flags to check. */
export interface BitmapCheck {
  /** In use by an export or a job (BDRV_BITMAP_BUSY). */
  busy?: boolean;
  /** Loaded from a read-only image (BDRV_BITMAP_RO). */
  readonly?: boolean;
  /** Marked inconsistent (BDRV_BITMAP_INCONSISTENT). */
  inconsistent?: boolean;
}

/** BDRV_BITMAP_ALLOW_RO: may be used, though maybe not changed. */
export const CHECK_USABLE: BitmapCheck = { busy: true, inconsistent: true };
/** BDRV_BITMAP_DEFAULT: may be changed. */
export const CHECK_CHANGEABLE: BitmapCheck = { busy: true, readonly: true, inconsistent: true };

/** A dirty byte range: `[offset, offset + length)`. */
export interface DirtyArea {
  offset: number;
  length: number;
}

/** The contents a bitmap had, to put back (a transaction's abort) or to let go (its commit). */
export interface BitmapBackup {
  /** Puts the saved contents back, plus the guest writes recorded since the backup was taken. */
  restore(): void;
  /** Drops the saved contents. */
  release(): void;
}

export interface DirtyBitmapOptions {
  /** Bytes covered: the node's length when the bitmap is created. */
  size: number;
  /** Recording guest writes (default true). */
  enabled?: boolean;
  persistent?: boolean;
  inconsistent?: boolean;
  /** Loaded from a read-only image: it may not be changed (QEMU's readonly bitmaps). */
  readonly?: boolean;
  /** The bits to use, shared with their owner (a job's copy bitmap shown as an anonymous bitmap); default: new, clean. */
  bits?: ClusterBitmap;
}

export class DirtyBitmap {
  private bits: ClusterBitmap;
  private recording: boolean;
  private busyFlag = false;
  /** While frozen by a job: the anonymous bitmap that records in this one's place (QEMU's successor). */
  private successorBitmap: DirtyBitmap | undefined;
  /** Guest writes recorded since each pending backup was taken (so that a restore loses none). */
  private readonly journals = new Set<{ bits: ClusterBitmap }>();
  readonly persistent: boolean;
  readonly inconsistent: boolean;
  private readonlyFlag: boolean;

  constructor(
    readonly node: BlockNode,
    /** Undefined for an anonymous bitmap (a job's own, or a merge's scratch). */
    readonly name: string | undefined,
    /** Bytes per bit: a power of two, at least 512. */
    readonly granularity: number,
    options: DirtyBitmapOptions,
  ) {
    if (!isPowerOfTwo(granularity) || granularity < 512) throw new Error(`DirtyBitmap: bad granularity ${granularity}`);
    this.bits = options.bits ?? new ClusterBitmap(granularity, options.size);
    this.recording = options.enabled ?? true;
    this.persistent = options.persistent ?? false;
    this.inconsistent = options.inconsistent ?? false;
    this.readonlyFlag = options.readonly ?? false;
  }

  /** Bytes covered (the node's length, following truncation). */
  get size(): number {
    return this.bits.length;
  }

  /** Loaded from an image that is read-only: it may not change (QEMU's readonly). */
  get readonly(): boolean {
    return this.readonlyFlag;
  }

  /** Follows its image's mode across a reopen. */
  setReadonly(readonly: boolean): void {
    this.readonlyFlag = readonly;
  }

  /** Records guest writes (QEMU: enabled, not disabled). */
  get enabled(): boolean {
    return this.recording;
  }

  enable(): void {
    this.recording = true;
  }

  disable(): void {
    this.recording = false;
  }

  /** The bitmap recording in this one's place while a job has it frozen. */
  get successor(): DirtyBitmap | undefined {
    return this.successorBitmap;
  }

  /**
   * Freezes this bitmap for a job (bdrv_dirty_bitmap_create_successor):
   * it stops changing and is busy, and `successor`, a new anonymous bitmap
   * of the same granularity, records from now on if this one did. The
   * BitmapStore lists the successor.
   */
  freeze(successor: DirtyBitmap): void {
    successor.recording = this.recording;
    this.recording = false;
    this.busyFlag = true;
    this.successorBitmap = successor;
  }

  /**
   * Ends the freeze and returns the successor, for the store to drop. With
   * `keep` false the contents become the successor's (QEMU's abdicate: the
   * job has taken care of what was marked); with `keep` true the writes the
   * successor recorded are added to the frozen contents (reclaim: nothing
   * is lost). Either way the bitmap records again as the successor did.
   */
  thaw(keep: boolean): DirtyBitmap {
    const successor = this.successorBitmap;
    if (successor === undefined) throw new Error(`DirtyBitmap: '${this.name ?? '(null)'}' is not frozen`);
    if (keep) this.bits.union(successor.bits);
    else this.bits = successor.bits.copy();
    this.recording = successor.recording;
    this.busyFlag = false;
    this.successorBitmap = undefined;
    return successor;
  }

  /** In use by an export or a job: only reading it is allowed. */
  get busy(): boolean {
    return this.busyFlag;
  }

  setBusy(busy: boolean): void {
    this.busyFlag = busy;
  }

  /** Dirty bytes: set bits × granularity (QEMU's bdrv_get_dirty_count). */
  get count(): number {
    return this.bits.count * this.granularity;
  }

  /** Whether the granule holding byte `offset` is dirty. */
  isDirty(offset: number): boolean {
    return offset >= 0 && offset < this.size && this.bits.has(Math.floor(offset / this.granularity));
  }

  /** A guest write to `[offset, offset + bytes)`: marks it if the bitmap is enabled (QEMU's bdrv_set_dirty). */
  recordWrite(offset: number, bytes: number): void {
    if (!this.recording || bytes <= 0) return;
    const { first, end } = this.bits.clustersOf(offset, bytes);
    this.bits.setRange(first, end);
    for (const journal of this.journals) journal.bits.setRange(first, end);
  }

  /** Marks `[offset, offset + bytes)` dirty, enabled or not (bdrv_set_dirty_bitmap). */
  setDirty(offset: number, bytes: number): void {
    if (bytes <= 0) return;
    const { first, end } = this.bits.clustersOf(offset, bytes);
    this.bits.setRange(first, end);
  }

  /**
   * Marks the granules inside `[offset, offset + bytes)` clean; a granule
   * only partly inside stays dirty, except the last one of the node.
   */
  resetDirty(offset: number, bytes: number): void {
    const end = Math.min(offset + bytes, this.size);
    const first = Math.ceil(offset / this.granularity);
    const last = end === this.size ? this.bits.clusters : Math.floor(end / this.granularity);
    this.bits.clearRange(first, last);
  }

  /** Marks everything clean (bdrv_clear_dirty_bitmap). */
  clear(): void {
    this.bits.clearAll();
  }

  /**
   * Adds what `source` marks, at this bitmap's granularity (QEMU merges
   * bitmaps of different granularities). The sizes must be equal; the
   * caller checks, with QEMU's message.
   */
  merge(source: DirtyBitmap): void {
    for (const area of source.dirtyAreas(0, source.size)) this.setDirty(area.offset, area.length);
  }

  /** The first dirty range within `[start, end)`, clipped to it, or undefined. */
  nextDirtyArea(start: number, end: number): DirtyArea | undefined {
    const stop = Math.min(end, this.size);
    if (start < 0 || start >= stop) return undefined;
    const g = this.granularity;
    const lastCluster = Math.ceil(stop / g);
    const first = this.bits.nextSet(Math.floor(start / g), lastCluster);
    if (first < 0) return undefined;
    const clean = this.bits.nextClear(first, lastCluster);
    const offset = Math.max(start, first * g);
    const areaEnd = clean < 0 ? stop : Math.min(stop, clean * g);
    return { offset, length: areaEnd - offset };
  }

  /** The dirty ranges within `[start, end)`, in order, each clipped to it. */
  *dirtyAreas(start: number, end: number): Generator<DirtyArea> {
    for (let area = this.nextDirtyArea(start, end); area !== undefined; ) {
      yield area;
      area = this.nextDirtyArea(area.offset + area.length, end);
    }
  }

  /** Follows the node's new length: granules past it go, granules added are clean (hbitmap_truncate). */
  resize(size: number): void {
    if (size === this.size) return;
    this.bits = this.bits.copy(size);
    for (const journal of this.journals) journal.bits = journal.bits.copy(size);
  }

  /** Throws QEMU's error if the bitmap is busy or inconsistent, as `flags` asks (bdrv_dirty_bitmap_check). */
  check(flags: BitmapCheck = CHECK_USABLE): void {
    const name = this.name ?? '(null)';
    if (flags.busy && this.busy) {
      throw new BlockLayerError(`Bitmap '${name}' is currently in use by another operation and cannot be used`);
    }
    if (flags.readonly && this.readonly) {
      throw new BlockLayerError(`Bitmap '${name}' is readonly and cannot be modified`);
    }
    if (flags.inconsistent && this.inconsistent) {
      throw new BlockLayerError(`Bitmap '${name}' is inconsistent and cannot be used`);
    }
  }

  /**
   * Saves the contents (before a clear or merge in a transaction). Guest
   * writes from now on are journalled, so `restore` keeps them: QEMU's
   * restore would drop writes made between prepare and abort.
   */
  backup(): BitmapBackup {
    const saved = this.bits.copy();
    const journal = { bits: new ClusterBitmap(this.granularity, this.size) };
    this.journals.add(journal);
    return {
      restore: () => {
        if (!this.journals.delete(journal)) return;
        const restored = saved.copy(this.size);
        restored.union(journal.bits);
        this.bits = restored;
      },
      release: () => {
        this.journals.delete(journal);
      },
    };
  }

  /**
   * The bits to store in an image (QEMU's serialization, ClusterBitmap.toBytes):
   * while frozen, with what the successor recorded, so no write is lost.
   */
  toBytes(): Buffer {
    if (this.successorBitmap === undefined) return this.bits.toBytes();
    const merged = this.bits.copy();
    merged.union(this.successorBitmap.bits);
    return merged.toBytes();
  }

  /** BlockDirtyInfo, as query-named-block-nodes shows it. */
  info(): BlockDirtyInfoValue {
    return {
      ...(this.name === undefined ? {} : { name: this.name }),
      count: this.count,
      granularity: this.granularity,
      // QEMU's bdrv_dirty_bitmap_recording: a frozen bitmap shows its successor's state.
      recording: this.recording || (this.successorBitmap?.recording ?? false),
      busy: this.busy,
      persistent: this.persistent,
      ...(this.inconsistent ? { inconsistent: true } : {}),
    };
  }
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}
