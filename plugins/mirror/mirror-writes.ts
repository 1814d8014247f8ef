/**
 * The mirror's interception of guest writes, as taps on the source's write
 * hooks (every write, write-zeroes and discard reaching the source, however
 * it came), QEMU's bdrv_mirror_top_do_write:
 *
 * - background copy mode: once a write is done (failed or not), its
 *   clusters are marked dirty and the job copies them later;
 * - write-blocking mode (active mirror), once the job has scanned the
 *   source: `beforeWrite` waits until no copy moves the clusters the write
 *   touches and holds them; `afterWrite` writes the same data to the target
 *   and marks what it wrote clean, before the guest's request completes. A
 *   partial cluster at either end that is dirty anyway is left to the
 *   background copy (QEMU's do_sync_target_write); so is a discard, which
 *   may or may not leave zeroes behind. A failed target write
 *   marks the range dirty again and goes to the job's error policy; the
 *   guest's write still succeeds.
 *
 * Neither the source nor the target may be resized while the job runs.
 * The `beforeWrite` taps run last (stage LAST_STAGE), so no other tap can
 * veto a write after it was held.
 */
import type { BlockNode } from '../../core/block/block-node.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import type { WriteRequest, WriteResult } from '../../core/block/request.js';
import { CopyError } from '../../core/copy/block-copy.js';
import { BlockIoError, toBlockIoError } from '../../core/errors.js';
import { untap } from '../../core/hooks/untap.js';
import type { MirrorState } from './mirror-state.js';

/** After every other plugin's taps. */
export const LAST_STAGE = 1000;

export class MirrorWrites {
  private readonly held = new WeakMap<WriteRequest, () => void>();

  constructor(
    private readonly source: BlockNode,
    private readonly target: NodeChild,
    private readonly state: MirrorState,
    private readonly tapName: string,
  ) {}

  install(): void {
    const tap = { name: this.tapName, stage: LAST_STAGE };
    this.source.hooks.beforeWrite.tapPromise(tap, (request) => this.beforeWrite(request));
    this.source.hooks.afterWrite.tapPromise(this.tapName, (request, result) => this.afterWrite(request, result));
    this.target.node.hooks.beforeWrite.tapPromise(tap, (request) => Promise.resolve(this.refuseResize(request)));
  }

  /** Stops watching (the job is ending; the source is drained, so no write is between the two taps). */
  remove(): void {
    untap(this.source.hooks.beforeWrite, this.tapName);
    untap(this.source.hooks.afterWrite, this.tapName);
    untap(this.target.node.hooks.beforeWrite, this.tapName);
  }

  private refuseResize(request: WriteRequest): Error | undefined {
    if (request.kind !== 'truncate') return undefined;
    const { job } = this.state;
    return new BlockIoError('EPERM', `Node '${request.node.nodeName}' is busy: block device is in use by block job: ${job.type}`);
  }

  private async beforeWrite(request: WriteRequest): Promise<Error | undefined> {
    const refused = this.refuseResize(request);
    if (refused !== undefined) return refused;
    if (this.state.copiesWrites) this.held.set(request, await this.state.copy.hold(request.offset, request.bytes));
    return undefined;
  }

  private async afterWrite(request: WriteRequest, result: WriteResult): Promise<void> {
    if (request.kind === 'truncate') return;
    const release = this.held.get(request);
    if (release === undefined) {
      this.state.markDirty(request.offset, request.bytes);
      return;
    }
    this.held.delete(request);
    try {
      // A discard may or may not read back as zeroes, and an offloaded copy has no buffer: the background copy takes what they left.
      const noData = request.kind === 'discard' || (request.kind === 'write' && request.buffer === undefined);
      if (result.error !== undefined || noData || !this.state.copiesWrites) {
        this.state.markDirty(request.offset, request.bytes);
      }
      else await this.writeThrough(request);
    } finally {
      release();
    }
  }

  /** QEMU's do_sync_target_write. */
  private async writeThrough(request: WriteRequest): Promise<void> {
    const { bitmap } = this.state;
    const granule = bitmap.clusterSize;
    let offset = request.offset;
    let bytes = request.bytes;
    let skip = 0;
    if (offset % granule !== 0 && bitmap.has(Math.floor(offset / granule))) {
      skip = Math.ceil(offset / granule) * granule - offset;
      if (bytes <= skip) return;
      offset += skip;
      bytes -= skip;
    }
    const end = offset + bytes;
    if (end % granule !== 0 && end !== bitmap.length && bitmap.has(Math.floor((end - 1) / granule))) {
      const tail = end % granule;
      if (bytes <= tail) return;
      bytes -= tail;
    }
    // Clusters the write covers whole are in sync once it lands (the disk's short last cluster counts as whole).
    const firstWhole = Math.ceil(offset / granule);
    const endWhole = offset + bytes === bitmap.length ? bitmap.clusters : Math.floor((offset + bytes) / granule);
    for (let c = firstWhole; c < endWhole; c++) bitmap.clear(c);
    const { job } = this.state;
    job.totalProgress += bytes;
    this.state.activeBytes += bytes;
    try {
      await this.write(request, offset, bytes, skip);
      job.progress(bytes);
    } catch (error) {
      this.state.markDirty(offset, bytes);
      this.state.fail(new CopyError('write', toBlockIoError(error)));
    } finally {
      this.state.activeBytes -= bytes;
    }
  }

  private write(request: WriteRequest, offset: number, bytes: number, skip: number): Promise<void> {
    if (request.kind === 'write-zeroes') return this.target.writeZeroes(offset, bytes, { mayUnmap: request.flags.mayUnmap ?? false });
    return this.target.write(offset, request.buffer!.subarray(skip, skip + bytes), { fua: request.flags.fua ?? false });
  }
}
