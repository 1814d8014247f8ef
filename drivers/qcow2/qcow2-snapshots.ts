/**
 * The internal snapshot table, read only as far as this driver needs it:
 * where the table and each snapshot's L1 table lie (for overlap checks and
 * check), and what qemu-img info lists of each snapshot. The active L1 is
 * the only one used for I/O. The limits and messages are QEMU's
 * (qcow2_read_snapshots).
 */
import type { SnapshotInfo } from '../../core/block/driver.js';
import { BlockLayerError } from '../../core/errors.js';
import { MAX_SNAPSHOT_EXTRA_DATA, MAX_SNAPSHOT_TABLE_BYTES, SNAPSHOT_HEADER_SIZE } from './qcow2-format.js';

export interface SnapshotL1 {
  offset: number;
  /** Entries. */
  size: number;
  /** The snapshot's id and name (for qemu-img check's messages). */
  id: string;
  name: string;
}

export interface SnapshotTable {
  /** Bytes the table occupies from snapshots_offset. */
  byteSize: number;
  l1Tables: SnapshotL1[];
  /** Every snapshot, in table order, as QEMU's SnapshotInfo. */
  infos: SnapshotInfo[];
}

/** The extra data QEMU 7.2 reads: the 64-bit VM state size, the disk size and the icount. */
const KNOWN_EXTRA_DATA = 24;
const NS_PER_SECOND = 1_000_000_000n;
/** The extra data's icount when the snapshot has none. */
const NO_ICOUNT = 0xffffffffffffffffn;

/** QEMU's SnapshotInfo of one entry: the 64-bit VM state size and the icount from the extra data where it has them. */
function snapshotInfo(entry: Buffer, extra: Buffer, id: string, name: string): SnapshotInfo {
  const vmClock = entry.readBigUInt64BE(24);
  const vmStateSize = extra.length >= 8 ? Number(extra.readBigUInt64BE(0)) : entry.readUInt32BE(32);
  const info: SnapshotInfo = {
    id,
    name,
    'vm-state-size': vmStateSize,
    'date-sec': entry.readUInt32BE(16),
    'date-nsec': entry.readUInt32BE(20),
    'vm-clock-sec': Number(vmClock / NS_PER_SECOND),
    'vm-clock-nsec': Number(vmClock % NS_PER_SECOND),
  };
  const icount = extra.length >= 24 ? extra.readBigUInt64BE(16) : NO_ICOUNT;
  if (icount !== NO_ICOUNT) info.icount = Number(icount);
  return info;
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

/** Reads the table's entries: headers, the extra data QEMU knows (the rest is skipped), ids and names. */
export async function readSnapshotTable(readAt: ReadAt, tableOffset: number, count: number): Promise<SnapshotTable> {
  const reader = new WindowReader(readAt);
  const l1Tables: SnapshotL1[] = [];
  const infos: SnapshotInfo[] = [];
  let offset = tableOffset;
  for (let i = 0; i < count; i++) {
    offset = Math.ceil(offset / 8) * 8;
    const entry = await reader.read(offset, SNAPSHOT_HEADER_SIZE);
    offset += SNAPSHOT_HEADER_SIZE;
    const extraDataSize = entry.readUInt32BE(36);
    if (extraDataSize > MAX_SNAPSHOT_EXTRA_DATA) {
      throw new BlockLayerError(`Too much extra metadata in snapshot table entry ${i}`);
    }
    const idLength = entry.readUInt16BE(12);
    const nameLength = entry.readUInt16BE(14);
    const l1Offset = entry.readBigUInt64BE(0);
    const l1Size = entry.readUInt32BE(8);
    // Copied: the window may move before the entry is done with.
    const header = Buffer.from(entry);
    const extra = Buffer.from(await reader.read(offset, Math.min(extraDataSize, KNOWN_EXTRA_DATA)));
    offset += extraDataSize;
    const strings = await reader.read(offset, idLength + nameLength);
    offset += idLength + nameLength;
    if (offset - tableOffset > MAX_SNAPSHOT_TABLE_BYTES) throw new BlockLayerError('Snapshot table is too big');
    const id = strings.toString('utf8', 0, idLength);
    const name = strings.toString('utf8', idLength);
    infos.push(snapshotInfo(header, extra, id, name));
    if (l1Offset < BigInt(Number.MAX_SAFE_INTEGER)) l1Tables.push({ offset: Number(l1Offset), size: l1Size, id, name });
  }
  return { byteSize: offset - tableOffset, l1Tables, infos };
}
