/**
 * How a mirror ends in the graph (QEMU's mirror_complete and
 * mirror_exit_common). On job-complete the node to replace (the source,
 * or `replaces`) is looked up and kept from other jobs. When the job
 * finalises — after it drained the source and copied the rest — the
 * interception stops, the job lets go of its nodes, and, if it was
 * completed (not cancelled, not failed), every user of the node to
 * replace switches to the target: the mirror_top filter and through it
 * every device and export. Then the filter leaves the graph (its users go
 * to the node under it: the target after a pivot, the source otherwise) and
 * the source's drained section ends, releasing the requests it held onto
 * the target.
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { DrainSection } from '../../core/block/drain-section.js';
import type { NodeEdge, NodeParent } from '../../core/block/node-edge.js';
import { BlockIoError, BlockLayerError } from '../../core/errors.js';
import type { Job } from '../../core/job/job.js';
import { canReplace } from './mirror-checks.js';
import type { MirrorWrites } from './mirror-writes.js';

export interface PivotParts {
  graph: BlockGraph;
  source: BlockNode;
  filter: BlockNode;
  target: BlockNode;
  writes: MirrorWrites;
  /** `replaces`: the node the target takes the place of; default: the source. */
  replaces: string | undefined;
}

export class MirrorPivot {
  private toReplace: BlockNode | undefined;
  private blocker: NodeEdge | undefined;
  private done = false;

  constructor(private readonly parts: PivotParts) {}

  /** job-complete: finds the node to replace and keeps other jobs off it until the end. */
  prepareCompletion(job: Job): void {
    const { graph, replaces } = this.parts;
    if (replaces === undefined || this.blocker !== undefined) return;
    const node = graph.node(replaces);
    if (node === undefined) throw new BlockLayerError(`Node name '${replaces}' not found`);
    const user: NodeParent = { parentName: job.id, parentKind: 'other', blocker: 'block device is in use by block-job-complete' };
    this.toReplace = node;
    this.blocker = graph.attach(user, node, 'replace blocker');
  }

  /**
   * Finishes the job in the graph, once (QEMU calls it from prepare or
   * abort, whichever comes first). `pivot`: the job completes and nothing
   * failed. Throws if the pivot is no longer safe; the graph is tidied up
   * all the same.
   */
  async finish(job: Job, pivot: boolean, drained: DrainSection | undefined): Promise<void> {
    if (this.done) return;
    this.done = true;
    const { graph, source, filter, target, writes } = this.parts;
    writes.remove();
    job.releaseNodes();
    let failure: Error | undefined;
    try {
      if (pivot) {
        const toReplace = this.toReplace ?? source;
        // QEMU prints "Can no longer replace …" to stderr and fails the job with EPERM's text.
        if (canReplace(source, toReplace)) graph.replace(toReplace, target);
        else failure = new BlockIoError('EPERM');
      }
      if (this.blocker !== undefined) graph.detach(this.blocker);
      await graph.dropFilter(filter);
    } finally {
      drained?.end();
    }
    if (failure !== undefined) throw failure;
  }
}
