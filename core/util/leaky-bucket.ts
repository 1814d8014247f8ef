/**
 * One leaky bucket of QEMU's I/O throttling (util/throttle.c), as qemu-img
 * convert -r sets it on the target (bps-write: `avg` bytes per second, the
 * default burst of avg/10, burst length 1): a request may start while the
 * level is at most avg/10, then adds its bytes to the level, which leaks at
 * `avg` per second. So a first request of any size starts at once, and the
 * average rate is held from there. Requests start in the order they ask.
 */
export type Sleep = (nanoseconds: number) => Promise<void>;

const NS_PER_SECOND = 1e9;

export class LeakyBucket {
  private level = 0;
  private last: number;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly avg: number,
    private readonly now: () => number = () => Number(process.hrtime.bigint()),
    private readonly sleep: Sleep = (ns) => new Promise((resolve) => setTimeout(resolve, Math.ceil(ns / 1e6))),
  ) {
    this.last = now();
  }

  /** Waits for this request's turn and for the bucket to have room, then counts its bytes. */
  admit(bytes: number): Promise<void> {
    const turn = this.queue.then(async () => {
      for (let wait = this.waitNs(); wait > 0; wait = this.waitNs()) await this.sleep(wait);
      this.level += bytes;
    });
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  /** throttle_compute_wait after a leak: how long until the level is down to the burst. */
  private waitNs(): number {
    const now = this.now();
    this.level = Math.max(0, this.level - (this.avg * (now - this.last)) / NS_PER_SECOND);
    this.last = now;
    const extra = this.level - this.avg / 10;
    // Whole nanoseconds, rounded up: a wait that rounds to nothing would never let the clock move.
    return extra > 0 ? Math.ceil((extra / this.avg) * NS_PER_SECOND) : 0;
  }
}
