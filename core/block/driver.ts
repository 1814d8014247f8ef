/**
 * The driver seam. A driver is one definition object: its name, its options
 * schema, its capabilities as data, then its operations (nbdkit's plugin
 * struct, QEMU's BlockDriver table). The BlockNode that wraps it validates
 * every request first (open, range, alignment, read-only, size limits), so
 * operations trust their inputs:
 *
 * - offsets and lengths are within the node and aligned to `requestAlignment`;
 * - no request is longer than `maxTransfer`;
 * - `write`/`writeZeroes`/`discard`/`truncate` are never called on a
 *   read-only node;
 * - with `concurrency: 'serialize'`, at most one operation runs at a time.
 *
 * Operations throw BlockIoError (core/errors.ts) on failure. A missing
 * optional operation is supplied by the core: a filter's goes to its filtered
 * child (nbdkit's `next`), `writeZeroes` is emulated with writes of zeroes,
 * `discard` does nothing, `flush` succeeds, `blockStatus` reports data;
 * copy offloading alone is never supplied (ENOTSUP, filters included).
 */
import type { TObject } from '@sinclair/typebox';
import type { BlockStatusExtent, WriteFlags, ZeroFlags } from './request.js';
import type { BlockNode } from './block-node.js';
import type { CopyRange } from './copy-range.js';
import type { BlockdevOptionsValue } from './blockdev-ref.js';
import type { NodeChild } from './node-edge.js';
import type { NodePermissions } from './permissions.js';

export type DriverKind = 'protocol' | 'format' | 'filter';

/** Request geometry. The node splits and aligns requests so drivers need not. */
export interface DriverLimits {
  /** Every offset and length handed to the driver is a multiple of this (a power of two). */
  requestAlignment: number;
  /** Longest request handed to the driver, in bytes. */
  maxTransfer: number;
  /** Allocation unit, if the format has one (jobs copy in multiples of it); 0 if none. */
  clusterSize: number;
}

/** What the driver can do natively; the core emulates the rest. */
export interface DriverCapabilities {
  /** `writeZeroes` is cheaper than writing zeroes. */
  canZero: boolean;
  /** `discard` releases space. */
  canDiscard: boolean;
  /** `write` honours `fua` itself (otherwise the core flushes after a FUA write). */
  canFua: boolean;
  /** `write` can store data compressed (`compressed` flag). */
  canCompress: boolean;
  /** 'parallel': requests may overlap in time; 'serialize': the core runs one at a time. */
  concurrency: 'parallel' | 'serialize';
  /** What a truncate adds reads as zeroes (QEMU's bdrv_has_zero_init_truncate). */
  growsZeroed?: boolean;
  /**
   * Preallocation modes `truncate` takes besides 'off'; the core refuses
   * the others with QEMU's "Unsupported preallocation mode".
   */
  preallocation?: readonly PreallocMode[];
}

/**
 * How a growing truncate allocates what it adds (QEMU's PreallocMode):
 * nothing, the format's metadata for it, reserved blocks, or written zeroes.
 */
export type PreallocMode = 'off' | 'metadata' | 'falloc' | 'full';

const PREALLOC_MODES: readonly string[] = ['off', 'metadata', 'falloc', 'full'] satisfies PreallocMode[];

/** Whether `mode` names a PreallocMode (options that take it as text check it when they use it, as QEMU's). */
export function isPreallocMode(mode: string): mode is PreallocMode {
  return PREALLOC_MODES.includes(mode);
}

/** A child the driver takes from its options (`file`, `backing`, `image` …). */
export interface ChildSpec {
  /** The options member that names or describes the child node. */
  name: string;
  /** Whether the member must be given. */
  required: boolean;
  /** I/O this driver does not implement is passed to this child (filters). */
  filtered?: boolean;
  /**
   * The driver only passes its parents' requests on to this child (raw's
   * file): the child is in use exactly when the node is (permissions.ts).
   * Implied by `filtered`; otherwise the driver's own use of the child
   * (its metadata, a backing file) puts the child in use.
   */
  passesPermissions?: boolean;
  /** The child need not be writable even when the node is. */
  readOnly?: boolean;
  /** The member is a list of children, whose roles are `name.0`, `name.1` … (quorum's `children`). */
  list?: boolean;
}

/** Everything a driver's `open` receives. */
export interface DriverOpenContext<O> {
  /** Driver options, validated against `options`, defaults applied; child members already opened. */
  readonly options: O;
  /** The driver options exactly as the user gave them (before defaults), e.g. to name the image. */
  readonly givenOptions: Readonly<Record<string, unknown>>;
  readonly nodeName: string;
  readonly readOnly: boolean;
  /** The user allows opening read-only when read-write is refused (`auto-read-only`). */
  readonly autoReadOnly: boolean;
  /**
   * Opened to be checked or repaired (qemu-img check, QEMU's BDRV_O_CHECK):
   * open what is damaged or dirty as far as a check needs, instead of refusing.
   */
  readonly check: boolean;
  /** Records that the driver opened the image read-only under `autoReadOnly`. */
  fallBackToReadOnly(): void;
  /** Children named in the options, by member name. */
  readonly children: ReadonlyMap<string, NodeChild>;
  /** Opens a further child the driver found it needs (a backing file named in an image header). */
  openChild(role: string, options: Record<string, unknown>, readOnly: boolean): Promise<NodeChild>;
}

/** Everything a driver's `create` receives. */
export interface DriverCreateContext<C> {
  /** Creation options, validated against `createOptions`, defaults applied. */
  readonly options: C;
  /** Creates an image with another (protocol) driver, e.g. the file a raw image lives in. */
  createWith(driver: string, options: Record<string, unknown>): Promise<void>;
  /**
   * Runs `body` with the file `createWith` made opened by protocol driver
   * `driver` and written through `file`, closed afterwards: for a format
   * that needs the file's own operations while it writes the image (a
   * preallocating resize), as QEMU's create writes through a BlockBackend on
   * the new file. Flushes reach the file.
   */
  writeCreated<T>(driver: string, filename: string, body: (file: NodeChild) => Promise<T>): Promise<T>;
}

/** A persistent bitmap of a measured source: what its space in a new image depends on. */
export interface MeasureBitmap {
  readonly name: string;
  /** Bytes per bit. */
  readonly granularity: number;
  /** Bytes the bitmap covers (its node's length). */
  readonly size: number;
}

/** The image a measured one would hold (qemu-img measure FILE). */
export interface MeasureSource {
  readonly length: number;
  /**
   * Bytes of data its whole backing chain stores, in whole `granularity`
   * units as QEMU's measure counts them (what reads as zeroes, or nothing
   * allocates, left out).
   */
  dataBytes(granularity: number): Promise<number>;
  /** Its persistent bitmaps; undefined if it cannot hold any (QEMU's bdrv_supports_persistent_dirty_bitmap). */
  readonly bitmaps: readonly MeasureBitmap[] | undefined;
}

/** Everything a driver's `measure` receives. */
export interface DriverMeasureContext<C> {
  /** Creation options as for `create` (from -o), with `size` when measuring an empty image. */
  readonly options: C;
  readonly source?: MeasureSource;
}

/** QEMU's BlockMeasureInfo: bytes an image would take. */
export interface MeasureResult {
  /** With only what it must hold allocated. */
  required: number;
  /** With every cluster allocated. */
  fullyAllocated: number;
  /** Space for the source's persistent bitmaps, where the format can hold them. */
  bitmaps?: number;
}

/**
 * Everything a driver's `blockdevCreate` receives. It runs inside a job of
 * type `create` (QMP blockdev-create); what it throws becomes the job's
 * `error`, so messages are QEMU's where QEMU has one.
 */
export interface DriverBlockdevCreateContext<B> {
  /**
   * The options, validated against `blockdevCreateOptions` and passed as
   * sent: an absent optional member is absent (QEMU's has_*), defaults are
   * the driver's to apply.
   */
  readonly options: B;
  /**
   * The node a BlockdevRef member names (QEMU's bdrv_open_blockdev_ref): an
   * existing node or device by name, or the options of a node opened for
   * this creation, which is closed when the job ends. Fails with QEMU's
   * "Cannot find device='x' nor node-name='x'" or the open's error.
   */
  openNode(ref: string | BlockdevOptionsValue): Promise<BlockNode>;
  /**
   * Takes `node` for writing and resizing for the rest of the job (QEMU's
   * blk_new_with_bs with write and resize permissions): the job becomes a
   * user of the node, and the returned child does its I/O. Fails with
   * QEMU's messages on a read-only node, or on one a format node above it
   * uses (which shares neither permission).
   */
  writeTo(node: BlockNode, role: string): NodeChild;
  /**
   * Refuses to recreate a file that a node of this layer has open (creating
   * truncates it, and blocklayer takes no file locks that would stop it).
   */
  checkNotOpen(filename: string): Promise<void>;
}

/** An internal snapshot as qemu-img info lists it (QEMU's SnapshotInfo, members in QAPI order). */
export interface SnapshotInfo {
  id: string;
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  /** Absent when the snapshot records none. */
  icount?: number;
}

/** What a new internal snapshot records besides its id (QEMU's QEMUSnapshotInfo as qemu-img fills it). */
export interface NewSnapshotInfo {
  name: string;
  dateSec: number;
  dateNsec: number;
  /** Zero unless a VM's clock and state are saved with it (never here). */
  vmClockNsec?: bigint;
  vmStateSize?: bigint;
  icount?: bigint;
}

/** Extra facts for query-named-block-nodes, in QEMU's ImageInfo terms. */
export interface NodeDescription {
  /** Set by protocol drivers: the file name or URI. Format drivers inherit the child's. */
  filename?: string;
  /** Bytes used on the host, if known. */
  actualSize?: number;
  /** ImageInfoSpecific: `{ type, data }`. */
  formatSpecific?: { type: string; data: Record<string, unknown> };
  /** Whether the image was not closed cleanly (formats with a dirty bit). */
  dirtyFlag?: boolean;
  /** The backing file name exactly as the image stores it (qemu-img info's backing-filename). */
  backingFilename?: string;
  /** The backing format the image records. */
  backingFormat?: string;
  /** Internal snapshots (qcow2), when the image has any. */
  snapshots?: SnapshotInfo[];
}

export interface BlockDriverDefinition<O = any, S = any, C = any, B = any> {
  /** The `driver` value in blockdev-add, as QEMU names it. */
  readonly name: string;
  readonly kind: DriverKind;
  /** One line for introspection and the README. */
  readonly summary: string;
  /** Driver-specific members of BlockdevOptions (the base members are the core's). */
  readonly options: TObject;
  /** Which option members are child nodes. */
  readonly children?: readonly ChildSpec[];
  readonly capabilities?: Partial<DriverCapabilities>;
  /** Options of `create`, if the driver can create images. */
  readonly createOptions?: TObject;
  /** Options `amend` takes (QEMU's amend_opts, qemu-img amend's -o), if the driver can change an image's options. */
  readonly amendOptions?: TObject;
  /**
   * Options of `blockdevCreate` (QEMU's BlockdevCreateOptions<Driver>: the
   * members after `driver`), if the driver supports QMP blockdev-create. They
   * become the driver's branch of the BlockdevCreateOptions union.
   */
  readonly blockdevCreateOptions?: TObject;
  /**
   * URI schemes a protocol driver serves (`nbd+unix`): an image tool's
   * filename `SCHEME://…` opens this driver with `parseFilename`'s options,
   * as qemu-img selects a protocol by prefix. A scheme names a protocol,
   * never a format, so this is not probing.
   */
  readonly protocols?: readonly string[];
  /** The driver's options for a `SCHEME://…` filename (with `protocols`). */
  parseFilename?(filename: string): Record<string, unknown>;

  /** Opens the image and returns the per-node state handed to every other operation. */
  open(ctx: DriverOpenContext<O>): Promise<S>;
  /** Releases the state; called once, after the node has drained. Children are closed by the core. */
  close?(state: S): Promise<void>;
  /**
   * Switches an open node between read-write and read-only (QEMU's
   * bdrv_reopen_prepare + commit: the file driver reopens its descriptor,
   * qcow2 writes its metadata back and clears the dirty bit, or checks and
   * repairs as a read-write open does). Called with the node drained and
   * flushed; going read-write, the children the node writes to already are
   * read-write, going read-only they still are. All or nothing: on failure
   * the state is left as it was and the core reopens the other nodes back.
   * Optional: a driver whose state does not depend on the mode needs none
   * (the node's seam alone then refuses or allows writes).
   */
  reopen?(state: S, change: DriverReopen): Promise<void>;
  /**
   * What the node's users need of it changed (core/block/permissions.ts):
   * a user came or went, or the node changed mode. Synchronous, and all or
   * nothing: a driver that locks the image (file) throws when another
   * process holds a lock that conflicts, and then holds what it held
   * before. A node starts with nothing taken (UNUSED); a reopen hands the
   * new permissions to `reopen` instead, where there is one.
   */
  setPermissions?(state: S, permissions: NodePermissions): void;
  /** Limits of this instance (they may depend on what was opened). */
  limits?(state: S): Partial<DriverLimits>;
  /** Size of the image in bytes, as seen by parents. */
  getLength(state: S): number;

  /** Fills `buf` with the bytes at `offset`. */
  read?(state: S, offset: number, buf: Buffer): Promise<void>;
  write?(state: S, offset: number, buf: Buffer, flags: WriteFlags): Promise<void>;
  writeZeroes?(state: S, offset: number, length: number, flags: ZeroFlags): Promise<void>;
  discard?(state: S, offset: number, length: number): Promise<void>;
  flush?(state: S): Promise<void>;
  /**
   * `flush` flushes the children itself (quorum votes on their results), so
   * the core does not flush them after it (QEMU's drivers with bdrv_co_flush).
   */
  readonly flushesChildren?: boolean;
  /**
   * Changes the size, growing with `preallocation` (one of the modes the
   * capabilities name, or 'off'); the node updates its length from
   * `getLength` afterwards.
   */
  truncate?(state: S, length: number, preallocation: PreallocMode): Promise<void>;
  /**
   * Describes `[offset, offset + length)` from `offset` on, in one or more
   * contiguous extents; may describe less than asked (the node asks again).
   */
  blockStatus?(state: S, offset: number, length: number): Promise<BlockStatusExtent[]>;
  /** Facts for query-named-block-nodes. */
  describe?(state: S): Promise<NodeDescription>;
  /** query-blockstats' `driver-specific` (QEMU's bdrv_get_specific_stats): `driver` and its counters. */
  specificStats?(state: S): { driver: string } & Record<string, unknown>;
  /**
   * Persistent dirty bitmaps (qcow2's bitmaps extension), which the core's
   * BitmapStore loads as a node opens and stores as it closes. `loadBitmaps`
   * reads them; on a writable image it marks them in use, so that an image
   * not closed cleanly shows them inconsistent.
   */
  loadBitmaps?(state: S): Promise<StoredBitmap[]>;
  /** Marks the image's bitmaps in use without reading their bits (a read-only node turned writable). */
  markBitmapsInUse?(state: S): Promise<void>;
  /** Replaces the image's bitmaps with `bitmaps`, marked not in use: the last thing before a writable node closes. */
  storeBitmaps?(state: S, bitmaps: readonly StoredBitmap[]): Promise<void>;
  /** Whether this image can hold persistent bitmaps at all (QEMU's bdrv_supports_persistent_dirty_bitmap: qcow2 v3). */
  canStoreBitmaps?(state: S): boolean;
  /** Takes bitmap `name` out of the writable image at once (block-dirty-bitmap-remove); nothing if it holds none so named. */
  removeBitmap?(state: S, name: string): Promise<void>;
  /**
   * Why a new persistent bitmap cannot be stored here (the text after
   * QEMU's "Can't make bitmap 'NAME' persistent in 'NODE': "), or undefined;
   * `count`: the node's persistent bitmaps so far.
   */
  bitmapStoreRefusal?(state: S, name: string, granularity: number, count: number): string | undefined;
  /**
   * Whether `toReplace`, somewhere below this node, may be replaced by a
   * node showing this node's data without changing what this node shows
   * (QEMU's bdrv_recurse_can_replace). Without it: only through the filtered
   * child of a filter.
   */
  recurseCanReplace?(state: S, toReplace: BlockNode): boolean;

  /**
   * Copy offloading's source side (core/block/copy-range.ts): `range.from`
   * is in this node; the driver passes each part on to where its bytes lie
   * (a child's copyRangeFrom, or, at the node holding them, the
   * destination's `range.to.node.copyRangeTo(range)`), or zeroes the
   * destination where it reads as zeroes (zeroDestination). Optional:
   * ENOTSUP without it, and the caller copies through a buffer.
   */
  copyRangeFrom?(state: S, range: CopyRange): Promise<void>;
  /**
   * Copy offloading's destination side: `range.to` is in this node; the
   * driver makes room and passes the copy on to a child's copyRangeTo, or,
   * at the node that stores the bytes, copies them from `range.from.node`
   * if it knows that node's driver (ENOTSUP otherwise). Optional.
   */
  copyRangeTo?(state: S, range: CopyRange): Promise<void>;

  /** Creates a new image (qemu-img create, drive-backup's target). */
  create?(ctx: DriverCreateContext<C>): Promise<void>;
  /** How large an image would be (QEMU's bdrv_measure, qemu-img measure); optional, with `createOptions`. */
  measure?(ctx: DriverMeasureContext<C>): Promise<MeasureResult>;
  /**
   * QMP blockdev-create, with QEMU's options for this driver: a protocol
   * driver creates its file, a format driver formats a node it is given
   * (`openNode`, `writeTo`). Present exactly when `blockdevCreateOptions` is.
   * Called once, from the `create` job's run; the nodes it took are let go
   * when the job ends.
   */
  blockdevCreate?(ctx: DriverBlockdevCreateContext<B>): Promise<void>;
  /**
   * Checks the image's metadata, repairing what `repair` allows (qemu-img
   * check). Called on a node opened for it (read-only unless repairing).
   * Formats without metadata have none: qemu-img check says so (exit 63).
   */
  check?(state: S, repair: CheckRepair): Promise<ImageCheckResult>;
  /**
   * The node's backing link changed (QEMU's bdrv_change_backing_file, after
   * bdrv_set_backing_hd): records the new backing file in the image, so it
   * opens with it next time, and reads through `change.child` from now on.
   * Called by jobs that rewrite a backing chain (stream, commit), on a
   * writable open node, once the graph already points the node's `backing`
   * edge at the new node (or removed it). Crash-safe: everything written to
   * the image so far is durable before the image names another backing
   * file. Optional: without it the node's backing file cannot be changed
   * (ENOTSUP, as QEMU's drivers without the callback).
   */
  changeBackingFile?(state: S, change: BackingFileChange): Promise<void>;
  /**
   * Drops everything the image itself holds, so that it reads as its
   * backing file (QEMU's bdrv_make_empty: what qemu-img commit does to the
   * image it committed). Optional: ENOTSUP without it, which callers that
   * merely tidy up ignore, as qemu-img does.
   */
  makeEmpty?(state: S): Promise<void>;
  /**
   * The end of a run of compressed writes (QEMU's zero-length compressed
   * write, which qemu-img convert -c makes last): the format may tidy its
   * file, as qcow2 extends it to a whole 512-byte sector. Optional.
   */
  finishCompressed?(state: S): Promise<void>;
  /**
   * Changes an open image's format options (QEMU's bdrv_amend_options,
   * qemu-img amend), `options` validated against `amendOptions`, only those
   * given present. A control operation. Optional: ENOTSUP without it.
   */
  amend?(state: S, options: Record<string, unknown>): Promise<void>;
  /**
   * Internal snapshots, for formats that keep them (QEMU's
   * bdrv_snapshot_create, _goto and _delete): create records the image's
   * current content under a new id; goto makes a snapshot (an id, else a
   * name) the content; delete drops the one with this id and/or name
   * (ENOENT if none). Control operations, made with nothing else using the
   * node; the list is the description's `snapshots`. Optional: ENOTSUP
   * without them.
   */
  snapshotCreate?(state: S, snapshot: NewSnapshotInfo): Promise<SnapshotInfo>;
  snapshotGoto?(state: S, idOrName: string): Promise<void>;
  snapshotDelete?(state: S, id: string | undefined, name: string | undefined): Promise<void>;
  /**
   * Makes a read-only node read a snapshot (the one with this id and/or
   * name; ENOENT if none) instead of the image's current content, until it
   * is closed (QEMU's bdrv_snapshot_load_tmp, behind qemu-img convert -l).
   */
  snapshotLoadTmp?(state: S, id: string | undefined, name: string | undefined): Promise<void>;
  /**
   * The graph linked `child` as the backing node of a node opened without
   * its backing file (`backing: null`, as drive-mirror opens its target),
   * or unlinked it: reads go through it from now on; the image still names
   * the backing file it named (QEMU's bdrv_set_backing_hd alone).
   */
  linkBacking?(state: S, child: NodeChild | undefined): Promise<void>;
  /**
   * Opens the backing file the image names, for a node opened without it
   * (QEMU's bdrv_open_backing_file), with `openChild` (role `backing`),
   * and reads through it from now on. Nothing if the image names none.
   */
  openBackingFile?(state: S, openChild: DriverOpenContext<unknown>['openChild']): Promise<void>;
}

/** A dirty bitmap as an image stores it. */
export interface StoredBitmap {
  name: string;
  /** Bytes per bit. */
  granularity: number;
  /** Records writes (qcow2's `auto` flag). */
  enabled: boolean;
  /** Marked in use when the image was opened: it was not stored after its last change, so its bits are unknown. */
  inconsistent: boolean;
  /** Bit i (granule i) at byte i >> 3, mask 1 << (i & 7), as QEMU serializes them; undefined when inconsistent. */
  bits: Buffer | undefined;
}

/** What `reopen` changes. */
export interface DriverReopen {
  readonly readOnly: boolean;
  /** What the node's users need of it in the new mode: a driver holding image locks moves them to a new descriptor. */
  readonly permissions: NodePermissions;
}

/** What `changeBackingFile` records. */
export interface BackingFileChange {
  /** The backing child from now on, or undefined for none. */
  readonly child: NodeChild | undefined;
  /** The backing file name to store in the image (as given, relative names stay relative); undefined: none. */
  readonly name: string | undefined;
  /** Its format, stored with it (qcow2's backing format extension); undefined: none. */
  readonly format: string | undefined;
}

export type CheckRepair = 'none' | 'leaks' | 'all';

/** qemu-img check's findings, in QEMU's ImageCheck terms (only the counts; the CLI adds filename and format). */
export interface ImageCheckResult {
  checkErrors: number;
  corruptions: number;
  leaks: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset?: number;
  totalClusters?: number;
  allocatedClusters?: number;
  fragmentedClusters?: number;
  compressedClusters?: number;
  /** The lines qemu-img prints to stderr ("Leaked cluster 9 refcount=1 reference=0", "ERROR …"). */
  messages: string[];
}

/** Identity helper that keeps the option and state types of a definition. */
export function defineBlockDriver<O, S, C = never, B = never>(
  definition: BlockDriverDefinition<O, S, C, B>,
): BlockDriverDefinition<O, S, C, B> {
  return definition;
}
