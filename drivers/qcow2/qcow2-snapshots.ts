/**
 * The internal snapshot table, read only as far as this driver needs it:
 * where the table and each snapshot's L1 table lie (for overlap checks).
 * The active L1 is the only one used for I/O. The limits and messages are
 * QEMU's (qcow2_read_snapshots).
 */
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

/** Reads the table's entry headers, ids and names; extra data is skipped. */
export async function readSnapshotTable(readAt: ReadAt, tableOffset: number, count: number): Promise<SnapshotTable> {
  const reader = new WindowReader(readAt);
  const l1Tables: SnapshotL1[] = [];
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
    offset += extraDataSize;
    const strings = await reader.read(offset, idLength + nameLength);
    offset += idLength + nameLength;
    if (offset - tableOffset > MAX_SNAPSHOT_TABLE_BYTES) throw new BlockLayerError('Snapshot table is too big');
    if (l1Offset < BigInt(Number.MAX_SAFE_INTEGER)) {
      const id = strings.toString('utf8', 0, idLength);
      l1Tables.push({ offset: Number(l1Offset), size: l1Size, id, name: strings.toString('utf8', idLength) });
    }
  }
  return { byteSize: offset - tableOffset, l1Tables };
}
