/**
 * A node of the block graph: one driver instance behind the seam that checks
 * every request, tracks it, runs the write hooks and holds requests while
 * drained (nbdkit's backend.c, QEMU's block/io.c). A write-type request's
 * way through the seam is write-path.ts; DriverIo then aligns and splits
 * what reaches the driver.
 */
import { AsyncSeriesBailHook, AsyncSeriesHook, SyncHook } from 'tapable';
import { BlockIoError, toBlockIoError } from '../errors.js';
import { alignDown, alignUp } from './alignment.js';
import type { NodeSettings } from './base-options.js';
import type { BlockDriverDefinition, DriverCapabilities, DriverLimits, NewSnapshotInfo, PreallocMode, SnapshotInfo } from './driver.js';
import { DrainSection } from './drain-section.js';
import type { CopyRange } from './copy-range.js';
import { DriverIo } from './driver-io.js';
import type { NodeEdge, NodeParent } from './node-edge.js';
import { type NodePermissions, nodePermissions, samePermissions, UNUSED } from './permissions.js';
import { RequestTracker, type TrackedRequest } from './request-tracker.js';
import type {
  BlockStatusExtent,
  RequestKind,
  RequestOptions,
  WriteFlags,
  WriteRequest,
  WriteResult,
  ZeroFlags,
} from './request.js';
import { trackedWrite } from './write-path.js';

const defaultLimits: DriverLimits = { requestAlignment: 1, maxTransfer: Number.MAX_SAFE_INTEGER, clusterSize: 0 };
const defaultCapabilities: DriverCapabilities = {
  canZero: false,
  canDiscard: false,
  canFua: false,
  canCompress: false,
  concurrency: 'parallel',
};
export type NodeStatus = 'opening' | 'open' | 'closing' | 'closed';

export class BlockNode implements NodeParent {
  readonly parentKind = 'node';
  readonly hooks = Object.freeze({
    /**
     * Before a write, write-zeroes, discard or truncate reaches the driver.
     * A tap may delay the request (await I/O, e.g. copy-before-write) or veto
     * it by returning an Error, which fails that request with that Error.
     */
    beforeWrite: new AsyncSeriesBailHook<[WriteRequest], Error | undefined>(['request'], 'beforeWrite'),
    /** After the driver finished a write-type request, failed or not (dirty bitmaps, statistics). */
    afterWrite: new AsyncSeriesHook<[WriteRequest, WriteResult]>(['request', 'result'], 'afterWrite'),

    /**
     * A reopen switches the node's mode (`readOnly`: the new one), drained
     * and flushed: before the driver's reopen (going read-only, taps may
     * still write: the BitmapStore stores persistent bitmaps) and after it
     * (going read-write, the image is writable again). A failure of the
     * first fails the reopen; one of the second is ignored.
     */
    reopening: new AsyncSeriesHook<[BlockNode, boolean]>(['node', 'readOnly'], 'reopening'),
    reopened: new AsyncSeriesHook<[BlockNode, boolean]>(['node', 'readOnly'], 'reopened'),

    /** The node is being drained: new requests from outside are held until drainEnd (jobs pause here). */
    drainBegin: new SyncHook<[BlockNode]>(['node'], 'drainBegin'),
    /** The drained section ended. */
    drainEnd: new SyncHook<[BlockNode]>(['node'], 'drainEnd'),
  });

  /**
   * QEMU's write_threshold_offset: a write or discard that ends past it
   * sends BLOCK_WRITE_THRESHOLD once, and clears it (the write-threshold
   * plugin); 0 is none. query-named-block-nodes shows it.
   */
  writeThreshold = 0;

  /** Edges from this node to its children, by role ('file', 'backing' …). */
  readonly children = new Map<string, NodeEdge>();
  /** Edges pointing at this node: parent nodes, backends, jobs, exports. */
  readonly parents = new Set<NodeEdge>();

  private status: NodeStatus = 'opening';
  private readOnlyFallback = false;
  /** Set by a reopen: the mode from then on, whatever the options said. */
  private reopenedReadOnly: boolean | undefined;
  private state: unknown;
  /** Set once open: how requests reach the driver. */
  private io: DriverIo | undefined;
  private readonly tracker = new RequestTracker();
  private readonly sections = new Set<DrainSection>();
  readonly capabilities: DriverCapabilities;

  /** Driver options with defaults applied; child members as given. */
  readonly options: Readonly<Record<string, unknown>>;
  /** Driver options as the user gave them (they make the node's json: filename). */
  readonly givenOptions: Readonly<Record<string, unknown>>;
  readonly settings: Readonly<NodeSettings>;
  /** Created as part of another node's options, without a name from the user. */
  readonly implicit: boolean;
  /** The root of an internal open: whoever opened it uses it (permissions.ts). */
  readonly heldForUse: boolean;
  /** What the driver was last told the node's users need. */
  private permissions: NodePermissions = UNUSED;

  constructor(
    readonly nodeName: string,
    readonly driver: BlockDriverDefinition,
    init: { options: Record<string, unknown>; given: Record<string, unknown>; settings: NodeSettings; implicit: boolean; heldForUse: boolean },
  ) {
    this.options = init.options;
    this.givenOptions = init.given;
    this.settings = init.settings;
    this.implicit = init.implicit;
    this.heldForUse = init.heldForUse;
    this.capabilities = { ...defaultCapabilities, ...driver.capabilities };
  }

  get parentName(): string {
    return this.nodeName;
  }

  get readOnly(): boolean {
    return this.reopenedReadOnly ?? (this.settings.readOnly || this.readOnlyFallback);
  }

  /** The driver opened read-only under `auto-read-only`; called while opening. */
  fallBackToReadOnly(): void {
    if (this.status === 'opening' && this.settings.autoReadOnly) this.readOnlyFallback = true;
  }

  /**
   * One node's step of a reopen (its driver's `reopen`, then the seam's
   * mode). Use `setReadOnly` (node-reopen.ts), which checks the users,
   * takes the node's own children along in QEMU's order, flushes and drains.
   */
  async reopenReadOnly(readOnly: boolean): Promise<void> {
    if (this.status !== 'open') throw new BlockIoError('ENOMEDIUM', `Node '${this.nodeName}' is not open`);
    if (this.readOnly === readOnly) return;
    await this.hooks.reopening.promise(this, readOnly);
    const permissions = nodePermissions(this, readOnly);
    if (this.driver.reopen !== undefined) await this.driver.reopen(this.state, { readOnly, permissions });
    else if (!samePermissions(permissions, this.permissions)) this.driver.setPermissions?.(this.state, permissions);
    this.permissions = permissions;
    this.reopenedReadOnly = readOnly;
    // The switch is made and stays: what a tap could not do (load bitmaps again) leaves the image safe (they drop at its first write).
    await this.hooks.reopened.promise(this, readOnly).catch(() => undefined);
  }

  get length(): number {
    return this.io?.length ?? 0;
  }

  get limits(): Readonly<DriverLimits> {
    return this.io?.limits ?? defaultLimits;
  }

  get isOpen(): boolean {
    return this.status === 'open';
  }

  /** In-flight requests (read-only view). */
  get requests(): ReadonlySet<TrackedRequest> {
    return this.tracker.requests;
  }

  get quiesced(): boolean {
    return this.tracker.quiesced;
  }

  /** The end of the furthest write to this node (query-blockstats' wr_highest_offset). */
  get wrHighestOffset(): number {
    return this.tracker.wrHighestOffset;
  }

  /** The driver's per-node state, for the driver's own helpers and tests. */
  get driverState(): unknown {
    return this.state;
  }

  /**
   * Tells the driver what the node's users need of it now, then its
   * children theirs (a child may be in use through this node): after a
   * user came or went. Throws when a driver refuses (an image lock another
   * process holds), with this node as it was.
   */
  refreshPermissions(): void {
    if (this.status !== 'open') return;
    const wanted = nodePermissions(this);
    if (!samePermissions(wanted, this.permissions)) {
      this.driver.setPermissions?.(this.state, wanted);
      this.permissions = wanted;
    }
    for (const edge of this.children.values()) edge.node.refreshPermissions();
  }

  /** Completes opening with the state the driver's `open` returned. Called by the graph. */
  activate(state: unknown): void {
    this.state = state;
    const limits = { ...defaultLimits, ...this.driver.limits?.(state) };
    this.io = new DriverIo(this.nodeName, this.driver, state, limits, this.capabilities, this.settings, this.children);
    this.status = 'open';
  }

  async read(offset: number, buf: Buffer, options: RequestOptions = {}): Promise<void> {
    this.checkRequest('read', offset, buf.length);
    if (buf.length === 0) return;
    await this.tracked('read', offset, buf.length, options.nested ?? false, () => this.io!.read(offset, buf));
  }

  /** Runs `perform` as a tracked request that changes nothing (writes go through trackedWrite), driver errors as BlockIoError. */
  private async tracked<T>(kind: RequestKind, offset: number, bytes: number, nested: boolean, perform: () => Promise<T>): Promise<T> {
    const begun = this.tracker.begin(kind, offset, bytes, nested);
    const request = begun instanceof Promise ? await begun : begun;
    try {
      return await perform();
    } catch (error) {
      throw toBlockIoError(error);
    } finally {
      this.tracker.end(request);
    }
  }

  /** Not async: guest writes are the hot path, and each async layer costs a promise and microtasks per request. */
  write(offset: number, buf: Buffer, flags: WriteFlags = {}, options: RequestOptions = {}): Promise<void> {
    try {
      this.checkRequest('write', offset, buf.length);
      if (flags.compressed && !this.capabilities.canCompress) {
        throw new BlockIoError('ENOTSUP', `Driver '${this.driver.name}' of node '${this.nodeName}' cannot write compressed data`);
      }
    } catch (error) {
      return Promise.reject(error);
    }
    if (buf.length === 0) return Promise.resolve();
    return trackedWrite(this, this.tracker, 'write', offset, buf.length, flags, options, buf, () => this.io!.write(offset, buf, flags));
  }

  async writeZeroes(offset: number, length: number, flags: ZeroFlags = {}, options: RequestOptions = {}): Promise<void> {
    this.checkRequest('write-zeroes', offset, length);
    if (length === 0) return;
    const effective = { ...flags, mayUnmap: (flags.mayUnmap ?? false) && this.settings.discard === 'unmap' };
    await trackedWrite(this, this.tracker, 'write-zeroes', offset, length, effective, options, undefined, () =>
      this.io!.writeZeroes(offset, length, effective),
    );
  }

  /** Advisory: unaligned edges are dropped, and nothing happens with `discard: ignore`. */
  async discard(offset: number, length: number, options: RequestOptions = {}): Promise<void> {
    this.checkRequest('discard', offset, length);
    if (this.settings.discard === 'ignore') return;
    const align = this.limits.requestAlignment;
    const start = alignUp(offset, align);
    const end = offset + length === this.length ? offset + length : alignDown(offset + length, align);
    if (end <= start) return;
    await trackedWrite(this, this.tracker, 'discard', start, end - start, {}, options, undefined, () =>
      this.io!.discard(start, end - start),
    );
  }

  /**
   * The source side of a copy offload (copy-range.ts), `range.from` being
   * this node: a tracked read while the driver passes it on.
   */
  async copyRangeFrom(range: CopyRange): Promise<void> {
    const { offset } = range.from;
    this.checkRequest('read', offset, range.length);
    if (range.length === 0) return;
    this.checkCopyAlignment(offset, range.length);
    await this.tracked('read', offset, range.length, range.from.nested, () => this.io!.copyRangeFrom(range));
  }

  /** The destination side of a copy offload, `range.to` being this node: a tracked write without a buffer. */
  async copyRangeTo(range: CopyRange): Promise<void> {
    const { offset } = range.to;
    this.checkRequest('write', offset, range.length);
    if (range.length === 0) return;
    this.checkCopyAlignment(offset, range.length);
    await trackedWrite(this, this.tracker, 'write', offset, range.length, {}, { nested: range.to.nested }, undefined, () =>
      this.io!.copyRangeTo(range),
    );
  }

  /** Copies are never bounced: an unaligned one is not offloaded. */
  private checkCopyAlignment(offset: number, bytes: number): void {
    const align = this.limits.requestAlignment;
    if (offset % align !== 0 || (bytes % align !== 0 && offset + bytes !== this.length)) {
      throw new BlockIoError('ENOTSUP', `Copy offloading needs requests aligned to ${align} bytes on node '${this.nodeName}'`);
    }
  }

  /** Resizes the node; growth is allocated as `options.preallocation` says (default 'off'). */
  async truncate(length: number, options: RequestOptions & { preallocation?: PreallocMode } = {}): Promise<void> {
    this.checkRequest('truncate', 0, 0);
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new BlockIoError('EINVAL', `Invalid length ${length} for node '${this.nodeName}'`);
    }
    const lost = Math.max(0, this.length - length);
    await trackedWrite(this, this.tracker, 'truncate', length, lost, {}, options, undefined, () => this.io!.truncate(length, options.preallocation));
    // Nodes above that show this node's size (raw, filters) follow it, as QEMU's variable-length drivers do.
    for (const node of this.selfAndAncestors()) {
      if (node !== this && node.io !== undefined) node.io.length = node.driver.getLength(node.state);
    }
  }

  /** Flushes the driver, then every child this node writes to (as QEMU's bdrv_co_flush). */
  async flush(options: RequestOptions = {}): Promise<void> {
    this.checkRequest('flush', 0, 0);
    if (this.settings.noFlush || this.readOnly) return;
    await this.tracked('flush', 0, 0, options.nested ?? false, () => this.io!.flush());
  }

  /** Extents covering exactly `[offset, offset + length)`, clipped to the node's length. */
  async blockStatus(offset: number, length: number, options: RequestOptions = {}): Promise<BlockStatusExtent[]> {
    this.checkRequest('block-status', offset, Math.min(length, Math.max(0, this.length - offset)));
    const end = Math.min(offset + length, this.length);
    if (end <= offset) return [];
    return this.tracked('block-status', offset, end - offset, options.nested ?? false, () => this.io!.blockStatus(offset, end));
  }

  /**
   * Records a new backing file in the image after the graph changed the
   * node's backing edge (QEMU's bdrv_change_backing_file): `name` and
   * `format`, or none; the driver reads through the node's current `backing`
   * child from then on. A control operation, not a tracked request: callers
   * (stream, commit) make it with the node drained.
   */
  async changeBackingFile(name: string | undefined, format: string | undefined): Promise<void> {
    if (this.status !== 'open') throw new BlockIoError('ENOMEDIUM', `Node '${this.nodeName}' is not open`);
    // A backing format without a backing file makes no sense (QEMU: EINVAL).
    if (name === undefined && format !== undefined) throw new BlockIoError('EINVAL');
    if (this.driver.changeBackingFile === undefined) throw new BlockIoError('ENOTSUP');
    if (this.readOnly) throw new BlockIoError('EACCES', `Block node '${this.nodeName}' is read-only`);
    try {
      await this.driver.changeBackingFile(this.state, { child: this.children.get('backing'), name, format });
    } catch (error) {
      throw toBlockIoError(error);
    }
  }

  /**
   * Empties the image (QEMU's bdrv_make_empty): it reads as its backing
   * file afterwards. A control operation, as changeBackingFile: callers make
   * it with nothing else using the node.
   */
  makeEmpty(): Promise<void> {
    return this.controlOperation((driver) => driver.makeEmpty?.(this.state));
  }

  /** Ends a run of compressed writes (BlockDriverDefinition.finishCompressed); nothing for a driver without it. */
  async finishCompressed(): Promise<void> {
    if (this.driver.finishCompressed === undefined) return;
    await this.controlOperation((driver) => driver.finishCompressed?.(this.state));
  }

  /**
   * Changes the image's format options (BlockDriverDefinition.amend): a
   * control operation, as makeEmpty. The size may change with them.
   */
  async amend(options: Record<string, unknown>): Promise<void> {
    await this.controlOperation((driver) => driver.amend?.(this.state, options));
    for (const node of this.selfAndAncestors()) {
      if (node.io !== undefined) node.io.length = node.driver.getLength(node.state);
    }
  }

  /** Internal snapshots (BlockDriverDefinition.snapshotCreate, …): control operations, as makeEmpty. */
  snapshotCreate(snapshot: NewSnapshotInfo): Promise<SnapshotInfo> {
    return this.controlOperation((driver) => driver.snapshotCreate?.(this.state, snapshot));
  }

  snapshotGoto(idOrName: string): Promise<void> {
    return this.controlOperation((driver) => driver.snapshotGoto?.(this.state, idOrName));
  }

  snapshotDelete(id: string | undefined, name: string | undefined): Promise<void> {
    return this.controlOperation((driver) => driver.snapshotDelete?.(this.state, id, name));
  }

  /** Reads a snapshot from now on instead of the current content: a read-only node only (BlockDriverDefinition.snapshotLoadTmp). */
  snapshotLoadTmp(id: string | undefined, name: string | undefined): Promise<void> {
    return this.controlOperation((driver) => driver.snapshotLoadTmp?.(this.state, id, name), false);
  }

  /** A driver's control operation, on a writable node unless told: ENOTSUP if the driver has none (`call` gives undefined). */
  private async controlOperation<T>(call: (driver: BlockDriverDefinition) => Promise<T> | undefined, writes = true): Promise<T> {
    if (this.status !== 'open') throw new BlockIoError('ENOMEDIUM', `Node '${this.nodeName}' is not open`);
    if (writes && this.readOnly) throw new BlockIoError('EACCES', `Block node '${this.nodeName}' is read-only`);
    if (!writes && !this.readOnly) throw new BlockIoError('EINVAL', `Node '${this.nodeName}' is writable`);
    const pending = call(this.driver);
    if (pending === undefined) throw new BlockIoError('ENOTSUP');
    try {
      return await pending;
    } catch (error) {
      throw toBlockIoError(error);
    }
  }

  /** Drained sections this node is in. */
  get drainSections(): ReadonlySet<DrainSection> {
    return this.sections;
  }

  /**
   * Starts a drained section on this node: requests from outside the graph
   * to it and to every node above it are held, jobs above it pause, and the
   * promise resolves once nothing is in flight. End it with `section.end()`.
   */
  async drain(): Promise<DrainSection> {
    const section = new DrainSection();
    section.addNode(this);
    await section.settle();
    return section;
  }

  /** Runs `section` with this node drained (graph changes, job start, transactions). */
  async drained<T>(body: () => Promise<T>): Promise<T> {
    const section = await this.drain();
    try {
      return await body();
    } finally {
      section.end();
    }
  }

  /** Resolves when no request is in flight on this node. */
  whenIdle(): Promise<void> {
    return this.tracker.whenIdle();
  }

  /** Called by a DrainSection as it takes this node in. */
  enterSection(section: DrainSection): void {
    this.sections.add(section);
    this.tracker.quiesce();
    this.hooks.drainBegin.call(this);
  }

  /** Called by a DrainSection as it ends. */
  leaveSection(section: DrainSection): void {
    if (!this.sections.delete(section)) return;
    this.tracker.unquiesce();
    this.hooks.drainEnd.call(this);
  }

  /**
   * Waits for in-flight requests, flushes a writable node (as QEMU's
   * bdrv_close does; a failure there cannot be reported to anyone), runs
   * `beforeDriverClose` (the graph's nodeClosing hook) and closes the
   * driver. Children are closed by the graph.
   */
  async close(beforeDriverClose?: () => Promise<void>): Promise<void> {
    if (this.status === 'closed' || this.status === 'closing') return;
    const wasOpen = this.status === 'open';
    this.status = 'closing';
    await this.tracker.whenIdle();
    try {
      if (wasOpen && !this.readOnly && !this.settings.noFlush) await this.io!.flush().catch(() => undefined);
      if (wasOpen) await beforeDriverClose?.().catch(() => undefined);
      if (wasOpen) await this.io!.close();
    } finally {
      this.status = 'closed';
    }
  }

  private selfAndAncestors(): BlockNode[] {
    const seen = new Set<BlockNode>();
    const visit = (node: BlockNode): void => {
      if (seen.has(node)) return;
      seen.add(node);
      for (const edge of node.parents) {
        const parent = edge.parent;
        if (parent instanceof BlockNode) visit(parent);
      }
    };
    visit(this);
    return [...seen];
  }

  private checkRequest(kind: RequestKind, offset: number, bytes: number): void {
    if (this.status !== 'open') {
      throw new BlockIoError('ENOMEDIUM', `Node '${this.nodeName}' is not open`);
    }
    if (kind !== 'read' && kind !== 'block-status' && kind !== 'flush' && this.readOnly) {
      throw new BlockIoError('EACCES', `Block node '${this.nodeName}' is read-only`);
    }
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0) {
      throw new BlockIoError('EINVAL', `Invalid request offset ${offset} length ${bytes} on node '${this.nodeName}'`);
    }
    if (kind !== 'truncate' && kind !== 'flush' && offset + bytes > this.length) {
      throw new BlockIoError(
        'EIO',
        `Request ${offset}+${bytes} is beyond the end of node '${this.nodeName}' (${this.length} bytes)`,
      );
    }
  }

}
