/**
 * A drained section: while it lasts, requests from outside the graph
 * (backends, exports) to its nodes are held, and the users above them that
 * can pause (jobs) are paused. Draining a node drains everything above it.
 * The section records exactly what it quiesced, so graph changes made
 * inside it (a filter inserted, a job attached) are drained too and
 * released at `end` — the way QEMU drains a parent attached to a drained
 * node.
 */
import type { BlockNode } from './block-node.js';
import type { NodeParent } from './node-edge.js';

export class DrainSection {
  private readonly nodes: BlockNode[] = [];
  private readonly users: NodeParent[] = [];
  private ended = false;

  /**
   * `owner`: the user that drains its own nodes (a mirror job before it
   * completes). It is paused like any other user, but not waited for: it is
   * the one waiting (QEMU's mirror_drained_poll while in its own drain).
   */
  constructor(private readonly owner?: NodeParent) {}

  /** Quiesces `node` and everything above it. */
  addNode(node: BlockNode): void {
    if (this.ended || this.nodes.includes(node)) return;
    this.nodes.push(node);
    node.enterSection(this);
    for (const edge of [...node.parents].reverse()) {
      const parent = edge.parent;
      if (parent.parentKind === 'node') this.addNode(parent as BlockNode);
      else this.addUser(parent);
    }
  }

  /** Pauses a user above a drained node (a job attached to it). */
  addUser(user: NodeParent): void {
    if (this.ended || this.users.includes(user)) return;
    this.users.push(user);
    user.drainedBegin?.();
  }

  /** A user left the drained nodes: it need not stay paused for this section. */
  userDetached(user: NodeParent): void {
    const stillAttached = this.nodes.some((node) => [...node.parents].some((edge) => edge.parent === user));
    const index = this.users.indexOf(user);
    if (stillAttached || index < 0) return;
    this.users.splice(index, 1);
    user.drainedEnd?.();
  }

  /** Resolves once nothing is in flight on the drained nodes and every paused user is quiescent. */
  async settle(): Promise<void> {
    const users = this.users.filter((u) => u !== this.owner);
    await Promise.all([...this.nodes.map((n) => n.whenIdle()), ...users.map((u) => u.drainedPoll?.())]);
  }

  /** Releases the users (newest first, as QEMU walks its parents) and then the nodes. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const user of [...this.users].reverse()) user.drainedEnd?.();
    for (const node of [...this.nodes].reverse()) node.leaveSection(this);
  }
}
