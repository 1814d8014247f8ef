/**
 * The intermediate commit job (QEMU 7.2's block/commit.c): `top` is not
 * the active layer. `run` grows the base to `top`'s size if it is smaller,
 * then walks `top` in steps of at most 512 KiB and copies each step some
 * image from `top` down to the base's overlay allocates into the base.
 * Progress counts every step, the rate limit what was copied. Errors go
 * to on-error (a read of `top` or a write of the base): report ends the
 * job, stop pauses it, ignore retries; either way the step is done again.
 * No READY: the job completes by itself.
 *
 * On success (`prepare`, QEMU's bdrv_drop_intermediate) the base is flushed,
 * every user of the commit_top filter — the image above `top` — now uses
 * the base, and that image records the base (`backing-file`, or the base's
 * file name and format); the filter leaves the graph, and `top` and the
 * images below it down to the base close if nothing named them. On
 * failure or cancel the filter goes and the chain is as it was. A read-only
 * image above `top` is reopened read-write to record the base and back
 * read-only after; a read-only base the starter reopened goes back in `clean`.
 */
import { allocatedAbove } from '../../core/block/backing-chain.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import { BlockNode } from '../../core/block/block-node.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import { setReadOnly } from '../../core/block/node-reopen.js';
import { nodeFilename } from '../../core/block/node-info.js';
import { type BlockIoError, toBlockIoError } from '../../core/errors.js';
import { type BlockdevOnErrorValue, handleJobError } from '../../core/job/error-policy.js';
import type { Job } from '../../core/job/job.js';
import type { JobDriver } from '../../core/job/job-driver.js';

/** QEMU's COMMIT_BUFFER_SIZE. */
export const COMMIT_BUFFER_SIZE = 512 * 1024;

export interface CommitParts {
  graph: BlockGraph;
  top: BlockNode;
  /** The job's edge to `top` (reads) and to the base (writes, growth). */
  topEdge: NodeChild;
  base: BlockNode;
  baseEdge: NodeChild;
  /** The image right above the base (QEMU's base_overlay): what is allocated from `top` down to it is copied. */
  baseOverlay: BlockNode;
  /** The commit_top filter above `top`. */
  filter: BlockNode;
  backingFile: string | undefined;
  onError: BlockdevOnErrorValue;
  /** The base was read-only and reopened read-write for the job: it goes back when the job is cleaned up. */
  baseReadOnly: boolean;
}

export class CommitJob implements JobDriver {
  private parts!: CommitParts;
  private filterDropped = false;

  /** Hands the job what it works on, once the command has set it up (the job exists first, as in QEMU). */
  init(parts: CommitParts): void {
    this.parts = parts;
  }

  async run(job: Job): Promise<void> {
    const { topEdge, baseEdge, baseOverlay, top, onError } = this.parts;
    const length = topEdge.length;
    job.totalProgress = length;
    if (baseEdge.length < length) await baseEdge.truncate(length);
    const buffer = Buffer.allocUnsafe(COMMIT_BUFFER_SIZE);
    let delayNs = 0;
    for (let offset = 0, n = 0; offset < length; offset += n) {
      // A pause point even without a rate limit, so a drain can pause the job.
      await job.sleep(delayNs);
      n = Math.min(COMMIT_BUFFER_SIZE, length - offset);
      let copy = false;
      let failure: { error: BlockIoError; operation: 'read' | 'write' } | undefined;
      try {
        const run = await allocatedAbove(top, baseOverlay, true, offset, n);
        n = run.bytes;
        copy = run.allocated;
      } catch (error) {
        failure = { error: toBlockIoError(error), operation: 'read' };
      }
      if (copy) failure = await this.copy(offset, buffer.subarray(0, n));
      if (failure !== undefined) {
        const action = await handleJobError(job, onError, failure.operation, failure.error);
        if (action === 'report') throw failure.error;
        n = 0;
        continue;
      }
      job.progress(n);
      delayNs = copy && job.speed > 0 ? job.limiter.account(n) : 0;
    }
  }

  /** Copies `[offset, offset + data.length)` from `top` into the base; the failure, if any. */
  private async copy(offset: number, data: Buffer): Promise<{ error: BlockIoError; operation: 'read' | 'write' } | undefined> {
    const { topEdge, baseEdge } = this.parts;
    try {
      await topEdge.read(offset, data);
    } catch (error) {
      return { error: toBlockIoError(error), operation: 'read' };
    }
    try {
      await baseEdge.write(offset, data);
    } catch (error) {
      return { error: toBlockIoError(error), operation: 'write' };
    }
    return undefined;
  }

  /** QEMU's commit_prepare: bdrv_drop_intermediate. */
  async prepare(job: Job): Promise<void> {
    const { graph, base, filter, backingFile } = this.parts;
    job.releaseNodes();
    await base.flush({ nested: true });
    const name = backingFile ?? (await nodeFilename(base));
    await filter.drained(async () => {
      const users = [...filter.parents];
      graph.replace(filter, base);
      for (const edge of users) {
        if (edge.parent instanceof BlockNode && edge.role === 'backing') await recordBacking(edge.parent, name, base.driver.name);
      }
      await this.dropFilter();
    });
  }

  /** QEMU's commit_clean: a base that was read-only is again, whatever the outcome (a failure to is ignored, as QEMU). */
  async clean(): Promise<void> {
    if (this.parts.baseReadOnly) await setReadOnly(this.parts.base, true).catch(() => undefined);
  }

  /** QEMU's commit_abort: the filter goes, its users back on `top`. */
  async abort(job: Job): Promise<void> {
    job.releaseNodes();
    if (!this.filterDropped) await this.parts.filter.drained(() => this.dropFilter());
  }

  private async dropFilter(): Promise<void> {
    if (this.filterDropped) return;
    this.filterDropped = true;
    await this.parts.graph.dropFilter(this.parts.filter);
  }
}

/** QEMU's bdrv_child_cb_update_filename: a read-only image is reopened read-write to record its new backing file, then back. */
async function recordBacking(image: BlockNode, name: string, format: string): Promise<void> {
  const readOnly = image.readOnly;
  await setReadOnly(image, false);
  try {
    await image.changeBackingFile(name, format);
  } finally {
    if (readOnly) await setReadOnly(image, true).catch(() => undefined);
  }
}
