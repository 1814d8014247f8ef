/**
 * One NBD export (QEMU's NBDExport behind a BlockExport): a user of its
 * node, the way QEMU's export holds a BlockBackend, so the node cannot be
 * deleted while exported ("Node x is in use"), drained sections hold the
 * export's requests, and when a job moves the node's users onto a filter
 * (backup's copy-before-write) the export's I/O goes through the filter.
 * Clients that chose the export are counted here so that a safe
 * block-export-del can refuse and a hard one can disconnect them.
 */
import type { DirtyBitmap } from '../../core/bitmap/dirty-bitmap.js';
import type { NodeEdge, NodeParent } from '../../core/block/node-edge.js';
import {
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_MAX_PAYLOAD,
} from '../../core/protocols/nbd/constants.js';
import type { BlockSizeInfo } from '../../core/protocols/nbd/handshake.js';

export interface ExportSettings {
  id: string;
  name: string;
  description: string | undefined;
  writable: boolean;
  /** Every write is answered only once it is stable (FUA on every write). */
  writethrough: boolean;
  allocationDepth: boolean;
  /** Dirty bitmaps served as `qemu:dirty-bitmap:NAME`, in the order given; busy while exported. */
  bitmaps: readonly DirtyBitmap[];
}

/** A client of an export, as the export sees it. */
export interface ExportClient {
  /** Disconnects; resolves once the client's requests in flight have finished. */
  close(): Promise<void>;
}

export class NbdExport implements NodeParent {
  readonly parentKind = 'export';
  readonly edge: NodeEdge;
  private readonly clients = new Set<ExportClient>();
  private shutdown = false;

  constructor(
    readonly settings: Readonly<ExportSettings>,
    attach: (parent: NodeParent) => NodeEdge,
  ) {
    this.edge = attach(this);
    for (const bitmap of settings.bitmaps) bitmap.setBusy(true);
  }

  get id(): string {
    return this.settings.id;
  }

  get name(): string {
    return this.settings.name;
  }

  get parentName(): string {
    return this.settings.id;
  }

  /** A writable export keeps its node from being reopened read-only (QEMU: it holds WRITE). */
  get writes(): boolean {
    return this.settings.writable;
  }

  /** The node the export's I/O reaches now (a job's filter while one sits above the exported node). */
  get nodeName(): string {
    return this.edge.node.nodeName;
  }

  get size(): number {
    return this.edge.node.length;
  }

  get shuttingDown(): boolean {
    return this.shutdown;
  }

  get clientCount(): number {
    return this.clients.size;
  }

  /**
   * The transmission flags, as qemu-storage-daemon 7.2 sends them: writable
   * 0x0ded, read-only 0x058f. Multi-conn is safe for both: every client's
   * I/O goes through the same node, so a flush on one connection covers
   * the writes all of them had answered.
   */
  get transmissionFlags(): number {
    let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_DF;
    flags |= NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;
    if (this.settings.writable) flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    else flags |= NBD_FLAG_READ_ONLY;
    return flags;
  }

  /**
   * Block sizes as QEMU sends them: the node's request alignment as the
   * minimum when the client will honour it (INFO, or GO asking for block
   * sizes), else 1; 4 KiB preferred; 32 MiB maximum payload.
   */
  blockSizes(clientHonoursMinimum: boolean): BlockSizeInfo {
    const alignment = this.edge.node.limits.requestAlignment;
    const minimum = clientHonoursMinimum && isPowerOfTwo(alignment) && alignment <= 65536 ? alignment : 1;
    return { minimum, preferred: Math.max(4096, minimum), maximum: NBD_MAX_PAYLOAD };
  }

  /** Counts a client in; false once the export is shutting down (the client must not use it). */
  addClient(client: ExportClient): boolean {
    if (this.shutdown) return false;
    this.clients.add(client);
    return true;
  }

  removeClient(client: ExportClient): void {
    this.clients.delete(client);
  }

  /** Refuses new clients and disconnects the current ones; resolves once their requests have finished. */
  async shutDown(): Promise<void> {
    this.shutdown = true;
    await Promise.all([...this.clients].map((client) => client.close()));
  }

  /** The export is gone: its bitmaps are usable again (QEMU's nbd_export_delete). */
  releaseBitmaps(): void {
    for (const bitmap of this.settings.bitmaps) bitmap.setBusy(false);
  }
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}
