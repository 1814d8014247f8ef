/**
 * The timer under a job's `sleep` and `nap`: one sleep at a time, for a
 * number of nanoseconds or (Infinity) until woken, that pause, cancel, a
 * new speed or new work can cut short with `wake`.
 */
export class WakeableSleep {
  private current: { timer: NodeJS.Timeout | undefined; wake: () => void } | undefined;

  /** A sleep is under way. */
  get active(): boolean {
    return this.current !== undefined;
  }

  /** Resolves after `ns` nanoseconds (Infinity: never by itself) or at `wake`, whichever comes first. */
  sleep(ns: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(this.current?.timer);
        this.current = undefined;
        resolve();
      };
      // setTimeout takes at most 2^31-1 ms; waking early is harmless (the caller asks the limiter again).
      const timer = Number.isFinite(ns) ? setTimeout(wake, Math.min(ns / 1e6, 2 ** 31 - 1)) : undefined;
      this.current = { timer, wake };
    });
  }

  /** Ends the sleep under way now, if there is one. */
  wake(): void {
    this.current?.wake();
  }
}
