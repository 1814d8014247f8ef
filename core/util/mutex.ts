/** A FIFO async mutex: `run` executes callbacks one at a time, in call order. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  private queued = 0;

  /** Whether a callback runs or waits: a synchronous step must not then touch what the mutex guards. */
  get locked(): boolean {
    return this.queued > 0;
  }

  run<T>(fn: () => Promise<T>): Promise<T> {
    this.queued++;
    const result = this.tail.then(fn, fn);
    const done = (): void => {
      this.queued--;
    };
    this.tail = result.then(done, done);
    return result;
  }
}
