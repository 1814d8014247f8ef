/**
 * A node of the block graph: one driver instance behind the seam that checks
 * every request, tracks it, runs the write hooks, and aligns and splits it
 * for the driver (nbdkit's backend.c, QEMU's block/io.c).
 */
import { AsyncSeriesBailHook, AsyncSeriesHook, SyncHook } from 'tapable';
import { BlockIoError, toBlockIoError } from '../errors.js';
import { Mutex } from '../util/mutex.js';
import { alignDown, alignUp, chunks, coveringRange, isAligned, isZeroBuffer } from './alignment.js';
import type { NodeSettings } from './base-options.js';
import type { BlockDriverDefinition, DriverCapabilities, DriverLimits } from './driver.js';
import type { NodeEdge, NodeParent } from './node-edge.js';
import { RequestTracker, type TrackedRequest } from './request-tracker.js';
import type {
  BlockStatusExtent,
  RequestKind,
  RequestOptions,
  WriteFlags,
  WriteKind,
  WriteRequest,
  WriteResult,
  ZeroFlags,
} from './request.js';

const defaultLimits: DriverLimits = { requestAlignment: 1, maxTransfer: Number.MAX_SAFE_INTEGER, clusterSize: 0 };
const defaultCapabilities: DriverCapabilities = {
  canZero: false,
  canDiscard: false,
  canFua: false,
  concurrency: 'parallel',
};
/** Largest buffer used when zeroes have to be written as data. */
const ZERO_CHUNK = 1 << 20;

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

    /** The node is being drained: new requests from outside are held until drainEnd (jobs pause here). */
    drainBegin: new SyncHook<[BlockNode]>(['node'], 'drainBegin'),
    /** The drained section ended. */
    drainEnd: new SyncHook<[BlockNode]>(['node'], 'drainEnd'),
  });

  /** Edges from this node to its children, by role ('file', 'backing' …). */
  readonly children = new Map<string, NodeEdge>();
  /** Edges pointing at this node: parent nodes, backends, jobs, exports. */
  readonly parents = new Set<NodeEdge>();

  private status: NodeStatus = 'opening';
  private readOnlyFallback = false;
  private state: unknown;
  private currentLength = 0;
  private limitsValue: DriverLimits = defaultLimits;
  private readonly tracker = new RequestTracker();
  private readonly driverLock: Mutex | undefined;
  readonly capabilities: DriverCapabilities;

  /** Driver options with defaults applied; child members as given. */
  readonly options: Readonly<Record<string, unknown>>;
  /** Driver options as the user gave them (they make the node's json: filename). */
  readonly givenOptions: Readonly<Record<string, unknown>>;
  readonly settings: Readonly<NodeSettings>;
  /** Created as part of another node's options, without a name from the user. */
  readonly implicit: boolean;

  constructor(
    readonly nodeName: string,
    readonly driver: BlockDriverDefinition,
    init: { options: Record<string, unknown>; given: Record<string, unknown>; settings: NodeSettings; implicit: boolean },
  ) {
    this.options = init.options;
    this.givenOptions = init.given;
    this.settings = init.settings;
    this.implicit = init.implicit;
    this.capabilities = { ...defaultCapabilities, ...driver.capabilities };
    this.driverLock = this.capabilities.concurrency === 'serialize' ? new Mutex() : undefined;
  }

  get parentName(): string {
    return this.nodeName;
  }

  get readOnly(): boolean {
    return this.settings.readOnly || this.readOnlyFallback;
  }

  /** The driver opened read-only under `auto-read-only`; called while opening. */
  fallBackToReadOnly(): void {
    if (this.status === 'opening' && this.settings.autoReadOnly) this.readOnlyFallback = true;
  }

  get length(): number {
    return this.currentLength;
  }

  get limits(): Readonly<DriverLimits> {
    return this.limitsValue;
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

  /** The driver's per-node state, for the driver's own helpers and tests. */
  get driverState(): unknown {
    return this.state;
  }

  /** The child I/O falls through to when the driver does not implement an operation. */
  get filteredChild(): NodeEdge | undefined {
    const spec = this.driver.children?.find((c) => c.filtered);
    return spec === undefined ? undefined : this.children.get(spec.name);
  }

  /** Completes opening with the state the driver's `open` returned. Called by the graph. */
  activate(state: unknown): void {
    this.state = state;
    this.limitsValue = { ...defaultLimits, ...this.driver.limits?.(state) };
    this.currentLength = this.driver.getLength(state);
    this.status = 'open';
  }

  async read(offset: number, buf: Buffer, options: RequestOptions = {}): Promise<void> {
    this.checkRequest('read', offset, buf.length);
    if (buf.length === 0) return;
    const request = await this.tracker.begin('read', offset, buf.length, options.nested ?? false);
    try {
      await this.alignedRead(offset, buf);
    } catch (error) {
      throw toBlockIoError(error);
    } finally {
      this.tracker.end(request);
    }
  }

  async write(offset: number, buf: Buffer, flags: WriteFlags = {}, options: RequestOptions = {}): Promise<void> {
    this.checkRequest('write', offset, buf.length);
    if (buf.length === 0) return;
    await this.writeRequest('write', offset, buf.length, flags, options, buf, () => this.performWrite(offset, buf, flags));
  }

  async writeZeroes(offset: number, length: number, flags: ZeroFlags = {}, options: RequestOptions = {}): Promise<void> {
    this.checkRequest('write-zeroes', offset, length);
    if (length === 0) return;
    const effective = { ...flags, mayUnmap: (flags.mayUnmap ?? false) && this.settings.discard === 'unmap' };
    await this.writeRequest('write-zeroes', offset, length, effective, options, undefined, () =>
      this.performWriteZeroes(offset, length, effective),
    );
  }

  /** Advisory: unaligned edges are dropped, and nothing happens with `discard: ignore`. */
  async discard(offset: number, length: number, options: RequestOptions = {}): Promise<void> {
    this.checkRequest('discard', offset, length);
    if (this.settings.discard === 'ignore') return;
    const align = this.limitsValue.requestAlignment;
    const start = alignUp(offset, align);
    const end = offset + length === this.currentLength ? offset + length : alignDown(offset + length, align);
    if (end <= start) return;
    await this.writeRequest('discard', start, end - start, {}, options, undefined, () =>
      this.performDiscard(start, end - start),
    );
  }

  async truncate(length: number, options: RequestOptions = {}): Promise<void> {
    this.checkRequest('truncate', 0, 0);
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new BlockIoError('EINVAL', `Invalid length ${length} for node '${this.nodeName}'`);
    }
    const lost = Math.max(0, this.currentLength - length);
    await this.writeRequest('truncate', length, lost, {}, options, undefined, () => this.performTruncate(length));
  }

  /** Flushes the driver, then every child this node writes to (as QEMU's bdrv_co_flush). */
  async flush(options: RequestOptions = {}): Promise<void> {
    this.checkRequest('flush', 0, 0);
    if (this.settings.noFlush || this.readOnly) return;
    const request = await this.tracker.begin('flush', 0, 0, options.nested ?? false);
    try {
      if (this.driver.flush !== undefined) await this.callDriver(() => this.driver.flush!(this.state));
      for (const edge of this.children.values()) {
        if (!edge.node.readOnly) await edge.flush();
      }
    } catch (error) {
      throw toBlockIoError(error);
    } finally {
      this.tracker.end(request);
    }
  }

  /** Extents covering exactly `[offset, offset + length)`, clipped to the node's length. */
  async blockStatus(offset: number, length: number, options: RequestOptions = {}): Promise<BlockStatusExtent[]> {
    this.checkRequest('block-status', offset, Math.min(length, Math.max(0, this.currentLength - offset)));
    const end = Math.min(offset + length, this.currentLength);
    if (end <= offset) return [];
    const request = await this.tracker.begin('block-status', offset, end - offset, options.nested ?? false);
    try {
      return await this.collectStatus(offset, end);
    } catch (error) {
      throw toBlockIoError(error);
    } finally {
      this.tracker.end(request);
    }
  }

  /** Holds new requests from outside on this node and every node above it, then waits for in-flight ones. */
  async drainedBegin(): Promise<void> {
    const above = this.selfAndAncestors();
    for (const node of above) {
      node.tracker.quiesce();
      node.hooks.drainBegin.call(node);
    }
    await Promise.all(above.map((node) => node.tracker.whenIdle()));
  }

  drainedEnd(): void {
    for (const node of this.selfAndAncestors().reverse()) {
      node.tracker.unquiesce();
      node.hooks.drainEnd.call(node);
    }
  }

  /** Runs `section` with this node drained (graph changes, job start, transactions). */
  async drained<T>(section: () => Promise<T>): Promise<T> {
    await this.drainedBegin();
    try {
      return await section();
    } finally {
      this.drainedEnd();
    }
  }

  /** Waits for in-flight requests and closes the driver. Children are closed by the graph. */
  async close(): Promise<void> {
    if (this.status === 'closed' || this.status === 'closing') return;
    const wasOpen = this.status === 'open';
    this.status = 'closing';
    await this.tracker.whenIdle();
    try {
      if (wasOpen) await this.driver.close?.(this.state);
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
    if (kind !== 'truncate' && kind !== 'flush' && offset + bytes > this.currentLength) {
      throw new BlockIoError(
        'EIO',
        `Request ${offset}+${bytes} is beyond the end of node '${this.nodeName}' (${this.currentLength} bytes)`,
      );
    }
  }

  private async writeRequest(
    kind: WriteKind,
    offset: number,
    bytes: number,
    flags: ZeroFlags,
    options: RequestOptions,
    buffer: Buffer | undefined,
    perform: () => Promise<void>,
  ): Promise<void> {
    const align = this.limitsValue.requestAlignment;
    const rmw =
      (kind === 'write' || kind === 'write-zeroes') && !isAligned(offset, bytes, align)
        ? coveringRange(offset, bytes, align, this.currentLength)
        : undefined;
    const request = await this.tracker.begin(kind, offset, bytes, options.nested ?? false, rmw);
    try {
      const writeRequest: WriteRequest = buffer === undefined
        ? { node: this, kind, offset, bytes, flags }
        : { node: this, kind, offset, bytes, flags, buffer };
      if (this.hooks.beforeWrite.isUsed()) {
        const veto = await this.hooks.beforeWrite.promise(writeRequest);
        if (veto !== undefined) throw veto;
      }
      let failure: Error | undefined;
      try {
        await perform();
      } catch (error) {
        failure = toBlockIoError(error);
        throw failure;
      } finally {
        if (this.hooks.afterWrite.isUsed()) {
          await this.hooks.afterWrite.promise(writeRequest, failure === undefined ? {} : { error: failure });
        }
      }
    } finally {
      this.tracker.end(request);
    }
  }

  private async performWrite(offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
    if (this.settings.detectZeroes !== 'off' && isZeroBuffer(buf)) {
      const mayUnmap = this.settings.detectZeroes === 'unmap' && this.settings.discard === 'unmap';
      await this.performWriteZeroes(offset, buf.length, { ...flags, mayUnmap });
      return;
    }
    await this.alignedWrite(offset, buf, flags);
  }

  private async performWriteZeroes(offset: number, length: number, flags: ZeroFlags): Promise<void> {
    const align = this.limitsValue.requestAlignment;
    const end = offset + length;
    const alignedStart = Math.min(alignUp(offset, align), end);
    const alignedEnd = end === this.currentLength ? end : Math.max(alignDown(end, align), alignedStart);
    if (alignedStart > offset) await this.alignedWrite(offset, Buffer.alloc(alignedStart - offset), flags);
    if (alignedEnd > alignedStart) await this.zeroAligned(alignedStart, alignedEnd - alignedStart, flags);
    if (end > alignedEnd) await this.alignedWrite(alignedEnd, Buffer.alloc(end - alignedEnd), flags);
  }

  private async zeroAligned(offset: number, length: number, flags: ZeroFlags): Promise<void> {
    const { driver } = this;
    if (driver.writeZeroes !== undefined) {
      for (const [at, bytes] of chunks(offset, length, this.limitsValue.maxTransfer, this.limitsValue.requestAlignment)) {
        await this.callDriver(() => driver.writeZeroes!(this.state, at, bytes, flags));
      }
      return;
    }
    const child = this.filteredChild;
    if (child !== undefined) return child.writeZeroes(offset, length, flags);
    if (flags.noFallback) throw new BlockIoError('ENOTSUP');
    const zeroes = Buffer.alloc(Math.min(length, ZERO_CHUNK, alignDown(this.limitsValue.maxTransfer, this.limitsValue.requestAlignment) || ZERO_CHUNK));
    for (const [at, bytes] of chunks(offset, length, zeroes.length, this.limitsValue.requestAlignment)) {
      await this.transferWrite(at, bytes === zeroes.length ? zeroes : zeroes.subarray(0, bytes), flags);
    }
  }

  private async performDiscard(offset: number, length: number): Promise<void> {
    const { driver } = this;
    if (driver.discard !== undefined) {
      for (const [at, bytes] of chunks(offset, length, this.limitsValue.maxTransfer, this.limitsValue.requestAlignment)) {
        await this.callDriver(() => driver.discard!(this.state, at, bytes));
      }
      return;
    }
    await this.filteredChild?.discard(offset, length);
  }

  private async alignedRead(offset: number, buf: Buffer): Promise<void> {
    const align = this.limitsValue.requestAlignment;
    if (isAligned(offset, buf.length, align) || offset + buf.length === this.currentLength && offset % align === 0) {
      return this.transferRead(offset, buf);
    }
    const range = coveringRange(offset, buf.length, align, this.currentLength);
    const bounce = Buffer.allocUnsafe(range.bytes);
    await this.transferRead(range.offset, bounce);
    bounce.copy(buf, 0, offset - range.offset, offset - range.offset + buf.length);
  }

  /** Read-modify-write for unaligned writes; the tracker has serialised the aligned range. */
  private async alignedWrite(offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
    const align = this.limitsValue.requestAlignment;
    if (isAligned(offset, buf.length, align) || offset + buf.length === this.currentLength && offset % align === 0) {
      return this.transferWrite(offset, buf, flags);
    }
    const range = coveringRange(offset, buf.length, align, this.currentLength);
    const bounce = Buffer.allocUnsafe(range.bytes);
    await this.transferRead(range.offset, bounce);
    buf.copy(bounce, offset - range.offset);
    await this.transferWrite(range.offset, bounce, flags);
  }

  private async transferRead(offset: number, buf: Buffer): Promise<void> {
    const { driver } = this;
    const child = this.filteredChild;
    for (const [at, bytes] of chunks(offset, buf.length, this.limitsValue.maxTransfer, this.limitsValue.requestAlignment)) {
      const part = buf.subarray(at - offset, at - offset + bytes);
      if (driver.read !== undefined) await this.callDriver(() => driver.read!(this.state, at, part));
      else if (child !== undefined) await child.read(at, part);
      else throw new BlockIoError('ENOTSUP', `Driver '${driver.name}' cannot read`);
    }
  }

  private async transferWrite(offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
    const { driver } = this;
    const child = this.filteredChild;
    const emulateFua = (flags.fua ?? false) && !this.capabilities.canFua;
    const driverFlags = emulateFua ? { ...flags, fua: false } : flags;
    for (const [at, bytes] of chunks(offset, buf.length, this.limitsValue.maxTransfer, this.limitsValue.requestAlignment)) {
      const part = buf.subarray(at - offset, at - offset + bytes);
      if (driver.write !== undefined) await this.callDriver(() => driver.write!(this.state, at, part, driverFlags));
      else if (child !== undefined) await child.write(at, part, flags);
      else throw new BlockIoError('EACCES', `Driver '${driver.name}' cannot write`);
    }
    if (emulateFua && driver.write !== undefined) await this.flushNested();
  }

  private async flushNested(): Promise<void> {
    if (this.settings.noFlush) return;
    if (this.driver.flush !== undefined) await this.callDriver(() => this.driver.flush!(this.state));
    for (const edge of this.children.values()) if (!edge.node.readOnly) await edge.flush();
  }

  private async collectStatus(offset: number, end: number): Promise<BlockStatusExtent[]> {
    const extents: BlockStatusExtent[] = [];
    const align = this.limitsValue.requestAlignment;
    let position = offset;
    while (position < end) {
      const askFrom = alignDown(position, align);
      const askTo = Math.min(alignUp(end, align), this.currentLength);
      const answer = await this.statusFromDriver(askFrom, askTo - askFrom);
      let advanced = false;
      for (const extent of answer) {
        const from = Math.max(extent.offset, position);
        const to = Math.min(extent.offset + extent.length, end);
        if (extent.offset > position || extent.length <= 0) break;
        if (to <= from) continue;
        const last = extents[extents.length - 1];
        if (last && last.data === extent.data && last.zero === extent.zero && last.allocated === extent.allocated) {
          last.length += to - from;
        } else {
          extents.push({ offset: from, length: to - from, data: extent.data, zero: extent.zero, allocated: extent.allocated });
        }
        position = to;
        advanced = true;
      }
      if (!advanced) {
        throw new BlockIoError('EIO', `Driver '${this.driver.name}' returned no block status at ${position} on node '${this.nodeName}'`);
      }
    }
    return extents;
  }

  private async statusFromDriver(offset: number, length: number): Promise<BlockStatusExtent[]> {
    const { driver } = this;
    if (driver.blockStatus !== undefined) return this.callDriver(() => driver.blockStatus!(this.state, offset, length));
    const child = this.filteredChild;
    if (child !== undefined) return child.blockStatus(offset, length);
    return [{ offset, length, data: true, zero: false, allocated: true }];
  }

  private async performTruncate(length: number): Promise<void> {
    const { driver } = this;
    const child = this.filteredChild;
    if (driver.truncate !== undefined) await this.callDriver(() => driver.truncate!(this.state, length));
    else if (child !== undefined) await child.truncate(length);
    else throw new BlockIoError('ENOTSUP', `Driver '${driver.name}' does not support resize`);
    this.currentLength = driver.getLength(this.state);
  }

  private callDriver<T>(fn: () => Promise<T>): Promise<T> {
    return this.driverLock === undefined ? fn() : this.driverLock.run(fn);
  }
}
