/**
 * A protocol driver for crash tests: an in-memory disk that keeps what was
 * flushed apart from what was written since. A power loss at any moment
 * leaves the flushed state plus any subset of the later writes; `moment`
 * is called before every write and flush so a test can look at such
 * survivors all along a workload.
 */
import { defineBlockDriver } from '../../../core/block/driver.js';
import { driverPlugin } from '../../../core/plugin/driver-plugin.js';
import { Qapi, type Static } from '../../../core/schema/qapi.js';

type PendingOp = { kind: 'write'; offset: number; data: Buffer } | { kind: 'truncate'; length: number };

export class CrashDisk {
  /** The disk as written so far: `length` bytes of a buffer that grows by doubling. */
  private current: Buffer;
  length: number;
  private pending: PendingOp[] = [];
  writes = 0;
  flushes = 0;
  /** Called before each write and flush, with what a power loss right then could leave. */
  moment: ((kind: 'write' | 'flush', disk: CrashDisk) => Promise<void>) | undefined;

  constructor(private durable: Buffer) {
    this.current = Buffer.from(durable);
    this.length = durable.length;
  }

  read(offset: number, buf: Buffer): void {
    buf.fill(0);
    this.current.copy(buf, 0, offset, Math.min(this.length, offset + buf.length));
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.writes++;
    await this.moment?.('write', this);
    this.resize(Math.max(this.length, offset + data.length));
    data.copy(this.current, offset);
    this.pending.push({ kind: 'write', offset, data: Buffer.from(data) });
  }

  truncate(length: number): void {
    this.resize(length);
    this.pending.push({ kind: 'truncate', length });
  }

  async flush(): Promise<void> {
    this.flushes++;
    await this.moment?.('flush', this);
    this.durable = Buffer.from(this.current.subarray(0, this.length));
    this.pending = [];
  }

  private resize(length: number): void {
    if (length > this.current.length) {
      const grown = Buffer.alloc(Math.max(length, this.current.length * 2));
      this.current.copy(grown, 0, 0, this.length);
      this.current = grown;
    } else if (length > this.length) {
      this.current.fill(0, this.length, length);
    }
    this.length = length;
  }

  /** Writes and truncates since the last flush. */
  get pendingCount(): number {
    return this.pending.length;
  }

  /** What survives: the flushed state plus the later operations `keep` selects, in order. */
  survivor(keep: (index: number) => boolean): Buffer {
    let image: Buffer = Buffer.from(this.durable);
    this.pending.forEach((op, i) => {
      if (keep(i)) image = apply(image, op);
    });
    return image;
  }

}

function apply(image: Buffer, op: PendingOp): Buffer {
  if (op.kind === 'truncate') {
    const resized = Buffer.alloc(op.length);
    image.copy(resized, 0, 0, Math.min(image.length, op.length));
    return resized;
  }
  const end = op.offset + op.data.length;
  const target = end > image.length ? Buffer.concat([image, Buffer.alloc(end - image.length)]) : image;
  op.data.copy(target, op.offset);
  return target;
}

/** Disks by name, for the driver's `disk` option. */
export const crashDisks = new Map<string, CrashDisk>();

const options = Qapi.struct('BlockdevOptionsCrashDisk', { disk: Qapi.str() });

const crashDiskDriver = defineBlockDriver<Static<typeof options>, CrashDisk>({
  name: 'crash-disk',
  kind: 'protocol',
  summary: 'an in-memory disk that can lose power (tests)',
  options,
  capabilities: { concurrency: 'parallel' },
  open: async ({ options: o }) => crashDisks.get(o.disk)!,
  getLength: (disk) => disk.length,
  read: async (disk, offset, buf) => disk.read(offset, buf),
  write: (disk, offset, buf) => disk.write(offset, buf),
  flush: (disk) => disk.flush(),
  truncate: async (disk, length) => disk.truncate(length),
});

export const crashDiskPlugin = driverPlugin(crashDiskDriver, { version: '0.0.0' });
