/**
 * One bit per cluster of a disk: the clusters a job still has to copy
 * (QEMU's copy bitmap), and the storage of a named dirty bitmap (one bit
 * per granule, core/bitmap/dirty-bitmap.ts). Ranges are byte ranges; a
 * partial cluster at the end of the disk counts for its real size.
 */
export class ClusterBitmap {
  private readonly bits: Uint8Array;
  private setCount = 0;
  readonly clusters: number;

  constructor(
    readonly clusterSize: number,
    readonly length: number,
  ) {
    this.clusters = Math.ceil(length / clusterSize);
    this.bits = new Uint8Array(Math.ceil(this.clusters / 8));
  }

  has(cluster: number): boolean {
    return (this.bits[cluster >> 3]! & (1 << (cluster & 7))) !== 0;
  }

  set(cluster: number): void {
    if (this.has(cluster)) return;
    this.bits[cluster >> 3]! |= 1 << (cluster & 7);
    this.setCount++;
  }

  clear(cluster: number): void {
    if (!this.has(cluster)) return;
    this.bits[cluster >> 3]! &= ~(1 << (cluster & 7));
    this.setCount--;
  }

  /** Sets every cluster. */
  fill(): void {
    this.bits.fill(0xff);
    const spare = this.bits.length * 8 - this.clusters;
    if (spare > 0) this.bits[this.bits.length - 1] = 0xff >> spare;
    this.setCount = this.clusters;
  }

  /** The clusters `[offset, offset + bytes)` touches. */
  clustersOf(offset: number, bytes: number): { first: number; end: number } {
    return { first: Math.floor(offset / this.clusterSize), end: Math.ceil((offset + bytes) / this.clusterSize) };
  }

  /** First set cluster in `[from, end)` (default: to the last cluster), or -1. */
  nextSet(from: number, end = this.clusters): number {
    const stop = Math.min(end, this.clusters);
    for (let c = from; c < stop; c++) {
      if (this.bits[c >> 3] === 0) {
        c |= 7;
        continue;
      }
      if (this.has(c)) return c;
    }
    return -1;
  }

  /** First clear cluster in `[from, end)` (default: to the last cluster), or -1. */
  nextClear(from: number, end = this.clusters): number {
    const stop = Math.min(end, this.clusters);
    for (let c = from; c < stop; c++) {
      if (this.bits[c >> 3] === 0xff) {
        c |= 7;
        continue;
      }
      if (!this.has(c)) return c;
    }
    return -1;
  }

  /** Sets clusters `[first, end)` (clipped to the disk), a byte at a time where it can. */
  setRange(first: number, end: number): void {
    const stop = Math.min(end, this.clusters);
    let c = Math.max(0, first);
    for (; c < stop && (c & 7) !== 0; c++) this.set(c);
    for (; c + 8 <= stop; c += 8) {
      const byte = this.bits[c >> 3]!;
      if (byte === 0xff) continue;
      this.setCount += 8 - popcount8(byte);
      this.bits[c >> 3] = 0xff;
    }
    for (; c < stop; c++) this.set(c);
  }

  /** Clears clusters `[first, end)` (clipped to the disk). */
  clearRange(first: number, end: number): void {
    const stop = Math.min(end, this.clusters);
    let c = Math.max(0, first);
    for (; c < stop && (c & 7) !== 0; c++) this.clear(c);
    for (; c + 8 <= stop; c += 8) {
      const byte = this.bits[c >> 3]!;
      if (byte === 0) continue;
      this.setCount -= popcount8(byte);
      this.bits[c >> 3] = 0;
    }
    for (; c < stop; c++) this.clear(c);
  }

  /** Clears every cluster. */
  clearAll(): void {
    this.bits.fill(0);
    this.setCount = 0;
  }

  /**
   * A copy covering `length` bytes (default: the same): clusters past the
   * new end are dropped, clusters added at the end are clear.
   */
  copy(length = this.length): ClusterBitmap {
    const copy = new ClusterBitmap(this.clusterSize, length);
    const keep = Math.min(this.clusters, copy.clusters);
    const whole = keep >> 3;
    copy.bits.set(this.bits.subarray(0, whole));
    copy.setCount = 0;
    for (let i = 0; i < whole; i++) copy.setCount += popcount8(copy.bits[i]!);
    for (let c = whole * 8; c < keep; c++) if (this.has(c)) copy.set(c);
    return copy;
  }

  /**
   * The bits as QEMU serializes a dirty bitmap: cluster i at byte i >> 3,
   * mask 1 << (i & 7), the spare bits of the last byte clear. A copy.
   */
  toBytes(): Buffer {
    return Buffer.from(this.bits);
  }

  /** A bitmap of `clusterSize` over `length` bytes with the bits `bytes` holds (toBytes' layout; spare bits ignored). */
  static fromBytes(clusterSize: number, length: number, bytes: Uint8Array): ClusterBitmap {
    const bitmap = new ClusterBitmap(clusterSize, length);
    if (bytes.length !== bitmap.bits.length) throw new Error(`ClusterBitmap.fromBytes: ${bytes.length} bytes for ${bitmap.clusters} clusters`);
    bitmap.bits.set(bytes);
    const spare = bitmap.bits.length * 8 - bitmap.clusters;
    if (spare > 0) bitmap.bits[bitmap.bits.length - 1]! &= 0xff >> spare;
    for (const byte of bitmap.bits) bitmap.setCount += popcount8(byte);
    return bitmap;
  }

  /** Sets every cluster set in `other`, which has the same cluster size and length. */
  union(other: ClusterBitmap): void {
    if (other.clusterSize !== this.clusterSize || other.clusters !== this.clusters) {
      throw new Error('ClusterBitmap.union: the bitmaps differ in geometry');
    }
    let count = 0;
    for (let i = 0; i < this.bits.length; i++) {
      const byte = this.bits[i]! | other.bits[i]!;
      this.bits[i] = byte;
      count += popcount8(byte);
    }
    this.setCount = count;
  }

  get count(): number {
    return this.setCount;
  }

  /** Bytes covered by set clusters (the last cluster may be short). */
  get dirtyBytes(): number {
    if (this.setCount === 0) return 0;
    const last = this.clusters - 1;
    const tailShort = this.has(last) ? this.clusters * this.clusterSize - this.length : 0;
    return this.setCount * this.clusterSize - tailShort;
  }

  /** Byte range of clusters `[first, end)`, clipped to the disk. */
  range(first: number, end: number): { offset: number; bytes: number } {
    const offset = first * this.clusterSize;
    return { offset, bytes: Math.min(end * this.clusterSize, this.length) - offset };
  }
}

function popcount8(byte: number): number {
  let b = byte - ((byte >> 1) & 0x55);
  b = (b & 0x33) + ((b >> 2) & 0x33);
  return (b + (b >> 4)) & 0x0f;
}
