/**
 * The `create` job (QEMU's blockdev_create_run): calls the driver's
 * blockdevCreate once. Progress is 0 of 1 until it returns or throws, then
 * 1 of 1 either way, as in QEMU. The job is the user of the nodes the
 * creation writes to, until it ends; nodes the creation opened from
 * options are closed at clean.
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import { BlockNode } from '../../core/block/block-node.js';
import type { BlockdevOptionsValue } from '../../core/block/blockdev-ref.js';
import type { BlockDriverDefinition, DriverBlockdevCreateContext } from '../../core/block/driver.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import { BlockLayerError } from '../../core/errors.js';
import type { Job } from '../../core/job/job.js';
import type { JobDriver } from '../../core/job/job-driver.js';

export interface CreateJobServices {
  graph: BlockGraph;
  creator: ImageCreator;
}

/**
 * QEMU's permission check for a user that writes and resizes: refused on a
 * read-only node, and on one a format node uses as a non-filtered child
 * (a format shares neither write nor resize of its file).
 */
function checkWritable(node: BlockNode): void {
  if (node.readOnly) throw new BlockLayerError('Block node is read-only');
  for (const edge of node.parents) {
    const parent = edge.parent;
    if (!(parent instanceof BlockNode) || parent.driver.kind !== 'format') continue;
    if (parent.driver.children?.find((c) => c.name === edge.role)?.filtered === true) continue;
    throw new BlockLayerError(
      `Permission conflict on node '${node.nodeName}': permissions 'write, resize' are both required by an unnamed ` +
        `block device (uses node '${node.nodeName}' as 'root' child) and unshared by node '${parent.nodeName}' ` +
        `(uses node '${node.nodeName}' as '${edge.role}' child).`,
    );
  }
}

export class CreateJob implements JobDriver {
  /** Nodes opened from options for this creation, to close at the end. */
  private readonly opened: BlockNode[] = [];

  constructor(
    private readonly job: Job,
    private readonly driver: BlockDriverDefinition,
    private readonly options: Record<string, unknown>,
    private readonly services: CreateJobServices,
  ) {}

  /** Runs the creation; what it throws becomes the job's error. */
  async run(job: Job): Promise<void> {
    job.totalProgress = 1;
    try {
      await this.driver.blockdevCreate!(this.context());
    } finally {
      job.progress(1);
    }
  }

  /** Closes what the creation opened (the job has let go of its nodes already). */
  async clean(): Promise<void> {
    const { graph } = this.services;
    for (const node of this.opened.splice(0).reverse()) {
      if (node.implicit) await graph.closeIfUnused(node);
      else if (node.parents.size === 0 && graph.node(node.nodeName) === node) await graph.del(node.nodeName);
    }
  }

  private context(): DriverBlockdevCreateContext<unknown> {
    const { graph, creator } = this.services;
    return {
      options: this.options,
      openNode: async (ref) => {
        if (typeof ref === 'string') return graph.lookup(ref);
        const node = await graph.open(ref as BlockdevOptionsValue);
        this.opened.push(node);
        return node;
      },
      writeTo: (node, role): NodeChild => {
        checkWritable(node);
        const edge = graph.attach(this.job, node, role);
        this.job.hold(edge);
        return edge;
      },
      checkNotOpen: (filename) => creator.checkNotOpen(filename),
    };
  }
}
