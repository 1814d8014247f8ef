/**
 * A progress bar on stderr in MiB, for convert -p, backup --progress and
 * the other commands' -p; a job's progress as query-jobs reports it.
 * cli-progress is loaded when a bar is made, so that the commands that
 * show none do not load it at start-up.
 */
import type { Options, SingleBar } from 'cli-progress';
import type { BlockLayer } from '../../core/block-layer.js';

interface JobInfo {
  id: string;
  'current-progress': number;
  'total-progress': number;
}

/** Shows job `id`'s progress (query-jobs) on `bar`. */
export async function showJobProgress(layer: BlockLayer, bar: ProgressBar, id: string): Promise<void> {
  const jobs = await layer.execute<JobInfo[]>('query-jobs').catch(() => []);
  const job = jobs.find((j) => j.id === id);
  if (job !== undefined) bar.update(job['current-progress'], job['total-progress']);
}

export class ProgressBar {
  private started = false;

  private constructor(
    private readonly bar: SingleBar,
    private readonly emptyIsComplete: boolean,
  ) {}

  /**
   * `style`: the bar's format and how it behaves, over the common look.
   * `emptyIsComplete`: a total of 0 shows as done (an empty image).
   */
  static async create(style: Options, emptyIsComplete: boolean): Promise<ProgressBar> {
    const { SingleBar } = await import('cli-progress');
    const bar = new SingleBar({ stream: process.stderr, barCompleteChar: '\u2588', barIncompleteChar: '\u2591', hideCursor: true, ...style });
    return new ProgressBar(bar, emptyIsComplete);
  }

  /** `total` may change between updates (a job learns more to copy). */
  update(done: number, total: number): void {
    const payload = { done: (done / 2 ** 20).toFixed(0), all: (total / 2 ** 20).toFixed(0) };
    const [value, max] = total === 0 && this.emptyIsComplete ? [1, 1] : [done, total];
    if (!this.started) {
      this.bar.start(max, value, payload);
      this.started = true;
    } else {
      this.bar.setTotal(max);
      this.bar.update(value, payload);
    }
  }

  stop(): void {
    if (this.started) this.bar.stop();
  }
}
