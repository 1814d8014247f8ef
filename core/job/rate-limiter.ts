/**
 * QEMU's rate limiter (include/qemu/ratelimit.h): a quota of bytes per
 * 100 ms slice. Work is accounted when it is started; once a slice's quota
 * is used up, the slice is stretched by the excess and the next start waits
 * until it ends. A first burst always goes through, so a very low speed
 * still copies one chunk at once.
 */
const SLICE_NS = 100_000_000;

export class RateLimiter {
  private quota = 0;
  private sliceStart = 0;
  private sliceEnd = 0;
  private dispatched = 0;

  constructor(private readonly now: () => number = () => Number(process.hrtime.bigint())) {}

  /** Bytes per second; 0 means unlimited. */
  setSpeed(bytesPerSecond: number): void {
    this.quota = (bytesPerSecond * SLICE_NS) / 1e9;
  }

  /**
   * Counts `bytes` as started now, whatever the quota says, and returns the
   * nanoseconds to wait before the next start (QEMU's
   * ratelimit_calculate_delay, for jobs that account work once they know
   * how much of it counts, as mirror does).
   */
  account(bytes: number): number {
    if (this.quota === 0) return 0;
    const now = this.now();
    if (this.sliceEnd < now) {
      this.sliceStart = now;
      this.sliceEnd = now + SLICE_NS;
      this.dispatched = 0;
    }
    this.dispatched += bytes;
    if (this.dispatched < this.quota) return 0;
    this.sliceEnd = this.sliceStart + (this.dispatched / this.quota) * SLICE_NS;
    return this.sliceEnd - now;
  }

  /** Nanoseconds to wait before starting `bytes` more (0: go now); the bytes are counted when 0 is returned. */
  delay(bytes: number): number {
    if (this.quota === 0) return 0;
    const now = this.now();
    if (this.sliceEnd < now) {
      this.sliceStart = now;
      this.sliceEnd = now + SLICE_NS;
      this.dispatched = 0;
    }
    if (this.dispatched >= this.quota) return this.sliceEnd - now;
    this.dispatched += bytes;
    if (this.dispatched >= this.quota) {
      this.sliceEnd = this.sliceStart + (this.dispatched / this.quota) * SLICE_NS;
    }
    return 0;
  }
}
