/**
 * The internal snapshot table: its entries as QEMU reads them
 * (qcow2_read_snapshots: limits and messages too), where the table and each
 * snapshot's L1 table lie (for overlap checks and check), what qemu-img
 * info lists of each snapshot, and the table as QEMU writes it
 * (qcow2_write_snapshots' layout). The active L1 is the only one used for
 * I/O; qcow2-snapshot-ops.ts creates, applies and deletes snapshots.
 */
import type { SnapshotInfo } from '../../core/block/driver.js';
import { BlockIoError, BlockLayerError } from '../../core/errors.js';
import { MAX_SNAPSHOT_EXTRA_DATA, MAX_SNAPSHOT_TABLE_BYTES, SNAPSHOT_HEADER_SIZE } from './qcow2-format.js';

export interface SnapshotL1 {
  offset: number;
  /** Entries. */
  size: number;
  /** The snapshot's id and name (for qemu-img check's messages). */
  id: string;
  name: string;
}

/** One entry as QEMU keeps it in memory (QCowSnapshot). */
export interface SnapshotEntry {
  l1Offset: bigint;
  l1Size: number;
  id: string;
  name: string;
  /** The id and name as stored, written back as they were (a name need not be valid UTF-8). */
  rawId: Buffer;
  rawName: Buffer;
  /** The 64-bit size from the extra data if there, else the 32-bit field. */
  vmStateSize: bigint;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: bigint;
  /** The extra data's size on disk (QEMU writes at least the 24 bytes it knows). */
  extraDataSize: number;
  /** From the extra data, or the image size when it has none (as QEMU fills it in). */
  diskSize: bigint;
  /** From the extra data (unsigned 64-bit), or 2^64 - 1 (none). */
  icount: bigint;
  /** Extra data past the 24 bytes QEMU knows, kept as it was. */
  unknownExtra: Buffer;
}

export interface SnapshotTable {
  /** Bytes the table occupies from snapshots_offset. */
  byteSize: number;
  l1Tables: SnapshotL1[];
  /** Every snapshot, in table order, as QEMU's SnapshotInfo. */
  infos: SnapshotInfo[];
  entries: SnapshotEntry[];
}

/** The extra data QEMU 7.2 reads: the 64-bit VM state size, the disk size and the icount. */
const KNOWN_EXTRA_DATA = 24;
const NS_PER_SECOND = 1_000_000_000n;
/** The extra data's icount when the snapshot has none. */
const NO_ICOUNT = 0xffffffffffffffffn;

/** QEMU's SnapshotInfo of one entry. */
function snapshotInfo(entry: SnapshotEntry): SnapshotInfo {
  const info: SnapshotInfo = {
    id: entry.id,
    name: entry.name,
    'vm-state-size': Number(entry.vmStateSize),
    'date-sec': entry.dateSec,
    'date-nsec': entry.dateNsec,
    'vm-clock-sec': Number(entry.vmClockNsec / NS_PER_SECOND),
    'vm-clock-nsec': Number(entry.vmClockNsec % NS_PER_SECOND),
  };
  if (entry.icount !== NO_ICOUNT) info.icount = Number(entry.icount);
  return info;
}

/** The table's derived views, from its entries. */
export function snapshotTable(entries: SnapshotEntry[], byteSize: number): SnapshotTable {
  const l1Tables = entries
    .filter((e) => e.l1Offset < BigInt(Number.MAX_SAFE_INTEGER))
    .map((e) => ({ offset: Number(e.l1Offset), size: e.l1Size, id: e.id, name: e.name }));
  return { byteSize, l1Tables, infos: entries.map(snapshotInfo), entries };
}

type ReadAt = (offset: number, buf: Buffer) => Promise<void>;

/** Serves small reads from 64 KiB windows, so a long table is not read 40 bytes at a time. */
class WindowReader {
  private start = -1;
  private window = Buffer.alloc(0);

  constructor(private readonly readAt: ReadAt) {}

  async read(offset: number, length: number): Promise<Buffer> {
    if (this.start < 0 || offset < this.start || offset + length > this.start + this.window.length) {
      this.window = Buffer.alloc(Math.max(65536, length));
      this.start = offset;
      await this.readAt(offset, this.window);
    }
    return this.window.subarray(offset - this.start, offset - this.start + length);
  }
}

/** Reads the table's entries; `imageSize` stands in for a disk size the extra data does not record. */
export async function readSnapshotTable(readAt: ReadAt, tableOffset: number, count: number, imageSize: number): Promise<SnapshotTable> {
  const reader = new WindowReader(readAt);
  const entries: SnapshotEntry[] = [];
  let offset = tableOffset;
  for (let i = 0; i < count; i++) {
    offset = Math.ceil(offset / 8) * 8;
    const header = Buffer.from(await reader.read(offset, SNAPSHOT_HEADER_SIZE));
    offset += SNAPSHOT_HEADER_SIZE;
    const extraDataSize = header.readUInt32BE(36);
    if (extraDataSize > MAX_SNAPSHOT_EXTRA_DATA) {
      throw new BlockLayerError(`Too much extra metadata in snapshot table entry ${i}`);
    }
    const idLength = header.readUInt16BE(12);
    const nameLength = header.readUInt16BE(14);
    // Copied: the window may move before the entry is done with.
    const extra = Buffer.from(await reader.read(offset, extraDataSize));
    offset += extraDataSize;
    const strings = await reader.read(offset, idLength + nameLength);
    offset += idLength + nameLength;
    if (offset - tableOffset > MAX_SNAPSHOT_TABLE_BYTES) throw new BlockLayerError('Snapshot table is too big');
    entries.push({
      l1Offset: header.readBigUInt64BE(0),
      l1Size: header.readUInt32BE(8),
      id: strings.toString('utf8', 0, idLength),
      name: strings.toString('utf8', idLength),
      rawId: Buffer.from(strings.subarray(0, idLength)),
      rawName: Buffer.from(strings.subarray(idLength)),
      vmStateSize: extra.length >= 8 ? extra.readBigUInt64BE(0) : BigInt(header.readUInt32BE(32)),
      dateSec: header.readUInt32BE(16),
      dateNsec: header.readUInt32BE(20),
      vmClockNsec: header.readBigUInt64BE(24),
      extraDataSize,
      diskSize: extra.length >= 16 ? extra.readBigUInt64BE(8) : BigInt(imageSize),
      icount: extra.length >= KNOWN_EXTRA_DATA ? extra.readBigUInt64BE(16) : NO_ICOUNT,
      unknownExtra: extra.subarray(Math.min(extra.length, KNOWN_EXTRA_DATA)),
    });
  }
  return snapshotTable(entries, offset - tableOffset);
}

/** Where each entry starts and how long the table is, as QEMU lays it out (entries 8-byte aligned). */
function layout(entries: readonly SnapshotEntry[]): { starts: number[]; size: number } {
  const starts: number[] = [];
  let offset = 0;
  for (const e of entries) {
    offset = Math.ceil(offset / 8) * 8;
    starts.push(offset);
    offset += SNAPSHOT_HEADER_SIZE + Math.max(KNOWN_EXTRA_DATA, e.extraDataSize) + e.rawId.length + e.rawName.length;
    if (offset > MAX_SNAPSHOT_TABLE_BYTES) throw new BlockIoError('EFBIG', 'qcow2: the snapshot table would be too big');
  }
  return { starts, size: offset };
}

/** The bytes the table takes (QEMU's snapshots_size). */
export function snapshotTableSize(entries: readonly SnapshotEntry[]): number {
  return layout(entries).size;
}

/**
 * The table as qcow2_write_snapshots writes it: every entry with at least
 * the 24 bytes of extra data QEMU knows, the 32-bit VM state size only
 * where it fits, unknown extra data as it was, the gaps between entries
 * left zero.
 */
export function serializeSnapshotTable(entries: readonly SnapshotEntry[]): Buffer {
  const { starts, size } = layout(entries);
  const table = Buffer.alloc(size);
  entries.forEach((e, i) => {
    let at = starts[i]!;
    const extraSize = Math.max(KNOWN_EXTRA_DATA, e.extraDataSize);
    table.writeBigUInt64BE(e.l1Offset, at);
    table.writeUInt32BE(e.l1Size, at + 8);
    table.writeUInt16BE(e.rawId.length, at + 12);
    table.writeUInt16BE(e.rawName.length, at + 14);
    table.writeUInt32BE(e.dateSec, at + 16);
    table.writeUInt32BE(e.dateNsec, at + 20);
    table.writeBigUInt64BE(e.vmClockNsec, at + 24);
    if (e.vmStateSize <= 0xffffffffn) table.writeUInt32BE(Number(e.vmStateSize), at + 32);
    table.writeUInt32BE(extraSize, at + 36);
    at += SNAPSHOT_HEADER_SIZE;
    table.writeBigUInt64BE(e.vmStateSize, at);
    table.writeBigUInt64BE(e.diskSize, at + 8);
    table.writeBigUInt64BE(e.icount, at + 16);
    if (e.unknownExtra.length > 0) e.unknownExtra.copy(table, at + KNOWN_EXTRA_DATA);
    at += extraSize;
    at += e.rawId.copy(table, at);
    e.rawName.copy(table, at);
  });
  return table;
}
