/**
 * What `blocklayer backup` does, through the core's API only: a layer, the
 * source as a node, drive-backup, then the job followed by its events
 * (hooks.event) and its progress (query-jobs) until it concludes.
 */
import { stat } from 'node:fs/promises';
import { BlockLayer } from '../../core/block-layer.js';
import type { BlockLayerEvent } from '../../core/hooks/block-layer-hooks.js';
import { deferred } from '../../core/util/deferred.js';
import { LINKED_PLUGINS } from '../linked-plugins.js';
import { ProgressBar, showJobProgress } from './progress-bar.js';

export type SyncMode = 'full' | 'top' | 'none';
export type TargetMode = 'absolute-paths' | 'existing';

export interface BackupRequest {
  source: string;
  target: string;
  sourceFormat: string;
  /** The target's format; default: the source's. */
  format?: string | undefined;
  sync: SyncMode;
  /** Bytes per second, 0 = unlimited. */
  speed: number;
  mode: TargetMode;
  /** Show a progress bar on stderr. */
  progress: boolean;
}

export interface BackupResult {
  /** Bytes the job copied (its final offset). */
  bytes: number;
  seconds: number;
}

/** The job's failure, its cancellation, or a command's error: what the CLI prints after `blocklayer backup: `. */
export class BackupFailed extends Error {}

const JOB_ID = 'backup';
const SOURCE_NODE = 'source';
const PROGRESS_INTERVAL_MS = 200;

/**
 * Runs the backup; resolves with what was copied, rejects with BackupFailed.
 * SIGINT cancels the job (a second one exits at once). With sync=none the
 * job copies only what is written to the source meanwhile, which offline is
 * nothing: it is ended as soon as it runs, leaving the target backed by the
 * source.
 */
export async function runBackup(request: BackupRequest): Promise<BackupResult> {
  await checkDistinct(request.source, request.target);
  const layer = await BlockLayer.create({ linkedModules: LINKED_PLUGINS });
  const ended = deferred<BlockLayerEvent>();
  let jobExists = false;
  let interrupted = false;
  let ending: Promise<unknown> | undefined;
  const cancel = (): void => {
    ending ??= layer.execute('job-cancel', { id: JOB_ID }).catch(() => undefined);
  };
  layer.hooks.event.tap('blocklayer backup', (event) => {
    const data = event.data ?? {};
    if (event.event === 'JOB_STATUS_CHANGE' && data.id === JOB_ID) {
      if (data.status === 'created') jobExists = true;
      if (data.status === 'running' && (interrupted || request.sync === 'none')) cancel();
    }
    if ((event.event === 'BLOCK_JOB_COMPLETED' || event.event === 'BLOCK_JOB_CANCELLED') && data.device === JOB_ID) ended.resolve(event);
  });
  const onSigint = (): void => {
    if (interrupted) process.exit(130);
    interrupted = true;
    if (jobExists) cancel();
  };
  process.on('SIGINT', onSigint);
  const bar = request.progress
    ? await ProgressBar.create(
        { format: 'backup |{bar}| {percentage}% | {done}/{all} MiB | ETA {eta_formatted}', clearOnComplete: true, etaBuffer: 20 },
        false,
      )
    : undefined;
  let poller: NodeJS.Timeout | undefined;
  try {
    await layer
      .execute('blockdev-add', {
        driver: request.sourceFormat,
        'node-name': SOURCE_NODE,
        'read-only': true,
        file: { driver: 'file', filename: request.source },
      })
      .catch(fail);
    if (interrupted) throw new BackupFailed('cancelled');
    const start = performance.now();
    await layer
      .execute('drive-backup', {
        'job-id': JOB_ID,
        device: SOURCE_NODE,
        target: request.target,
        sync: request.sync,
        mode: request.mode,
        ...(request.format === undefined ? {} : { format: request.format }),
        ...(request.speed > 0 ? { speed: request.speed } : {}),
      })
      .catch(fail);
    if (bar !== undefined) {
      poller = setInterval(() => void showJobProgress(layer, bar, JOB_ID), PROGRESS_INTERVAL_MS);
    }
    const event = await ended.promise;
    const seconds = (performance.now() - start) / 1000;
    const data = event.data ?? {};
    if (typeof data.error === 'string') throw new BackupFailed(data.error);
    if (event.event === 'BLOCK_JOB_CANCELLED' && request.sync !== 'none') throw new BackupFailed('cancelled');
    return { bytes: Number(data.offset ?? 0), seconds };
  } finally {
    clearInterval(poller);
    bar?.stop();
    await ending;
    await layer.close();
    process.off('SIGINT', onSigint);
  }
}

/**
 * The layer has no image locking (README: differences from QEMU), so
 * nothing else stops drive-backup from creating the target over the source
 * and truncating it; QEMU refuses through its lock.
 */
async function checkDistinct(source: string, target: string): Promise<void> {
  const [a, b] = await Promise.all([stat(source).catch(() => undefined), stat(target).catch(() => undefined)]);
  if (a !== undefined && b !== undefined && a.dev === b.dev && a.ino === b.ino) {
    throw new BackupFailed(`'${target}' is the source image itself`);
  }
}

function fail(error: unknown): never {
  throw new BackupFailed(error instanceof Error ? error.message : String(error));
}
