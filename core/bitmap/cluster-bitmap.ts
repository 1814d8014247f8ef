/**
 * One bit per cluster of a disk: the clusters a job still has to copy
 * (QEMU's copy bitmap). Ranges are byte ranges; a partial cluster at the end
 * of the disk counts for its real size.
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

  /** First set cluster at or after `from`, or -1. */
  nextSet(from: number): number {
    for (let c = from; c < this.clusters; c++) {
      if (this.bits[c >> 3] === 0) {
        c |= 7;
        continue;
      }
      if (this.has(c)) return c;
    }
    return -1;
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
