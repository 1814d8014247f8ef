/**
 * The stream job (QEMU 7.2's block/stream.c). `run` walks the device in
 * steps of at most 512 KiB: a step the device's own image allocates is
 * skipped; otherwise, if an image below it, down to the base (or bottom),
 * allocates the step, its data is copied up into the device's image
 * (re-checked and written under the copy-on-read filter's gate, so a
 * guest write in between wins). Progress counts every step; the rate
 * limit counts what was copied. Errors go to on-error, all reported as
 * read errors as QEMU does: report ends the job, stop pauses it and
 * retries the step, ignore goes on and fails the job at the end (the
 * backing link stays).
 *
 * On success (`prepare`) the filter leaves the graph, and the device's
 * image gets its new backing link: the node below the base's overlay at
 * that moment (or none), recorded in the image with `backing-file` or the
 * base's file name and format. On failure or cancel only the filter goes;
 * what was copied stays, harmless. A device the starter reopened
 * read-write goes back read-only at the end, whatever the outcome.
 */
import { allocatedAbove, cowChild, nextInChain, skipFilters } from '../../core/block/backing-chain.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import { setReadOnly } from '../../core/block/node-reopen.js';
import { nodeFilename } from '../../core/block/node-info.js';
import { type BlockIoError, toBlockIoError } from '../../core/errors.js';
import { type BlockdevOnErrorValue, handleJobError } from '../../core/job/error-policy.js';
import { type Job, JobCancelled } from '../../core/job/job.js';
import type { JobDriver } from '../../core/job/job-driver.js';
import type { RangeGate } from './copy-on-read.js';

/** QEMU's STREAM_CHUNK. */
export const STREAM_CHUNK = 512 * 1024;

export interface StreamParts {
  graph: BlockGraph;
  /** The node streamed into (the device). */
  top: BlockNode;
  /** The job's edge to it: reads the chain through it, writes the copied data. */
  topEdge: NodeChild;
  /** The copy-on-read filter above it. */
  filter: BlockNode;
  gate: RangeGate;
  /** The lowest image copied from (QEMU's base_overlay). */
  baseOverlay: BlockNode;
  /** The node directly above the base (a filter of the base's overlay, or the overlay). */
  aboveBase: BlockNode;
  /** `backing-file`: the name to record instead of the base's file name. */
  backingFile: string | undefined;
  onError: BlockdevOnErrorValue;
  /** The device's image was read-only and reopened read-write for the job: it goes back in `clean`. */
  topReadOnly: boolean;
}

export class StreamJob implements JobDriver {
  private parts!: StreamParts;
  private filterDropped = false;

  /** Hands the job what it works on, once the command has set it up (the job exists first, as in QEMU). */
  init(parts: StreamParts): void {
    this.parts = parts;
  }

  async run(job: Job): Promise<void> {
    const { top, baseOverlay, onError } = this.parts;
    const image = skipFilters(top);
    // The base is the device's own backing file: nothing to copy (len stays 0).
    if (image === baseOverlay) return;
    const below = cowChild(image)!;
    const length = top.length;
    job.totalProgress = length;
    let delayNs = 0;
    let firstError: BlockIoError | undefined;
    for (let offset = 0, n = 0; offset < length; offset += n) {
      // A pause point even without a rate limit, so a drain can pause the job.
      await job.sleep(delayNs);
      n = Math.min(STREAM_CHUNK, length - offset);
      let copy = false;
      let failure: BlockIoError | undefined;
      try {
        const own = await allocatedAbove(image, image, true, offset, n);
        n = own.bytes;
        if (!own.allocated) {
          const run = await allocatedAbove(below, baseOverlay, true, offset, n);
          // Past the end of a shorter backing chain: the rest is not copied.
          n = !run.allocated && run.bytes === 0 ? length - offset : run.bytes;
          copy = run.allocated;
        }
        if (copy) await this.populate(offset, n);
      } catch (error) {
        if (error instanceof JobCancelled) throw error;
        failure = toBlockIoError(error);
      }
      if (failure !== undefined) {
        const action = await handleJobError(job, onError, 'read', failure);
        if (action === 'stop') {
          n = 0;
          continue;
        }
        firstError ??= failure;
        if (action === 'report') break;
      }
      job.progress(n);
      delayNs = copy && job.speed > 0 ? job.limiter.account(n) : 0;
    }
    // Not removing the backing file after an ignored error (QEMU).
    if (firstError !== undefined) throw firstError;
  }

  /**
   * Copies what of `[offset, offset + bytes)` the device's image still does
   * not allocate from the chain below it, with its writers held off the
   * range (QEMU's copy-on-read of stream_populate).
   */
  private async populate(offset: number, bytes: number): Promise<void> {
    const { gate, topEdge } = this.parts;
    await gate.run(offset, bytes, async () => {
      for (let at = offset; at < offset + bytes; ) {
        const [extent] = await topEdge.blockStatus(at, offset + bytes - at);
        if (extent === undefined) break;
        if (!extent.allocated) {
          if (extent.zero) await topEdge.writeZeroes(at, extent.length, { mayUnmap: false });
          else {
            const buffer = Buffer.allocUnsafe(extent.length);
            await topEdge.read(at, buffer);
            await topEdge.write(at, buffer);
          }
        }
        at += extent.length;
      }
    });
  }

  /** QEMU's stream_prepare: the filter goes, then the new backing link, in the graph and in the image. */
  async prepare(job: Job): Promise<void> {
    const { graph, top, aboveBase, backingFile } = this.parts;
    job.releaseNodes();
    await top.drained(async () => {
      await this.dropFilter();
      const image = skipFilters(top);
      if (cowChild(image) === undefined) return;
      const base = nextInChain(aboveBase);
      const unfilteredBase = base === undefined ? undefined : skipFilters(base);
      const name = unfilteredBase === undefined ? undefined : (backingFile ?? (await nodeFilename(unfilteredBase)));
      await graph.setBacking(image, base);
      await image.changeBackingFile(name, unfilteredBase?.driver.name);
    });
  }

  /**
   * QEMU's stream_clean: after a failure or cancel the filter goes (the
   * backing link stays); whatever the outcome, a device that was read-only
   * is again (a failure to is ignored, as QEMU).
   */
  async clean(): Promise<void> {
    if (!this.filterDropped) await this.parts.top.drained(() => this.dropFilter());
    if (this.parts.topReadOnly) await setReadOnly(this.parts.top, true).catch(() => undefined);
  }

  private async dropFilter(): Promise<void> {
    if (this.filterDropped) return;
    this.filterDropped = true;
    await this.parts.graph.dropFilter(this.parts.filter);
  }
}
