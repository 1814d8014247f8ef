/**
 * The block graph: named nodes, the edges between them and to their users,
 * and named backends. Opens node trees from QEMU's blockdev-add options
 * (the opening itself is node-opener.ts), deletes them under QEMU's in-use
 * rules (the op blockers are op-blockers.ts), replaces one node by another
 * for all its users, and rewrites backing links.
 */
import { inject, injectable } from 'inversify';
import { BlockLayerError } from '../errors.js';
import type { BlockLayerHooks } from '../hooks/block-layer-hooks.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';
import { BlockBackend } from './block-backend.js';
import { BlockNode } from './block-node.js';
import { BLOCKDEV_OPTIONS, type BlockdevOptionsValue } from './blockdev-ref.js';
import type { BlockDriverDefinition } from './driver.js';
import type { DriverRegistry } from './driver-registry.js';
import { NodeEdge, type NodeParent } from './node-edge.js';
import { checkDeviceName } from './node-names.js';
import { NodeOpener } from './node-opener.js';
import { OpBlockers } from './op-blockers.js';
import { refreshPermissionsAfter } from './permissions.js';

@injectable()
export class BlockGraph {
  private readonly nodes = new Map<string, BlockNode>();
  private readonly backends = new Map<string, BlockBackend>();
  /** Nodes only their users hold (closeWithLastUser). */
  private readonly heldByUsers = new WeakSet<BlockNode>();
  private readonly opener: NodeOpener;
  /** Stamps every edge made or re-pointed (`attach`, `replace`, `setBacking`): a node reports its newest blocker. */
  private readonly blockers = new OpBlockers((node) => this.deviceName(node));

  constructor(
    @inject(TOKENS.DriverRegistry) drivers: DriverRegistry,
    @inject(TOKENS.QapiValidator) private readonly validator: QapiValidator,
    @inject(TOKENS.BlockLayerHooks) private readonly hooks: BlockLayerHooks,
  ) {
    this.opener = new NodeOpener(
      {
        nodes: this.nodes,
        hasBackend: (name) => this.backends.has(name),
        lookup: (deviceOrNode) => this.lookup(deviceOrNode),
        attach: (parent, node, role) => this.attach(parent, node, role),
        detach: (edge) => this.detach(edge),
        nodeOpened: (node) => this.hooks.nodeOpened.promise(node),
        nodeAdded: (node) => this.hooks.nodeAdded.call(node),
        close: (node) => this.closeNode(node),
      },
      drivers,
      validator,
    );
  }

  /**
   * blockdev-add: validates the whole option tree, then opens it (children
   * first). The root must be named; nested nodes without a name get one.
   */
  async add(options: unknown): Promise<BlockNode> {
    const valid = this.validator.validate(this.validator.lookup(BLOCKDEV_OPTIONS)!, options) as BlockdevOptionsValue;
    if (valid['node-name'] === undefined) {
      throw new BlockLayerError("'node-name' must be specified for the root node");
    }
    return this.opener.openTree(valid, options as Record<string, unknown>, { readOnly: false });
  }

  /**
   * Opens a node tree for internal use (drive-backup's target, an image
   * tool's image, a test). A root without a name is named like a nested
   * node and, as one, goes away with `closeIfUnused` once its users are
   * gone. Whoever opens it uses it (permissions.ts: its image is locked).
   */
  async open(options: BlockdevOptionsValue, how: { readOnly?: boolean; check?: boolean } = {}): Promise<BlockNode> {
    const valid = this.validator.validate(this.validator.lookup(BLOCKDEV_OPTIONS)!, options) as BlockdevOptionsValue;
    return this.opener.openTree(valid, options, {
      readOnly: how.readOnly ?? false,
      implicit: valid['node-name'] === undefined,
      check: how.check ?? false,
      heldForUse: true,
    });
  }

  /** Closes a node nobody uses any more that nobody named (an internal open's root) or only its users held (closeWithLastUser). */
  async closeIfUnused(node: BlockNode): Promise<void> {
    if ((node.implicit || this.heldByUsers.has(node)) && node.parents.size === 0 && this.nodes.get(node.nodeName) === node) await this.remove(node);
  }

  /**
   * Opens a filter node of `driver` on top of `child` (a job's filter, such as
   * backup's copy-before-write; the driver need not be registered). Its
   * users are moved onto it separately, with `replace`.
   */
  openFilter(driver: BlockDriverDefinition, child: BlockNode, nodeName?: string): Promise<BlockNode> {
    return this.opener.openFilter(driver, child, nodeName);
  }

  /** Takes a filter out: its users go back to the node under it, and it closes. */
  async dropFilter(filter: BlockNode): Promise<void> {
    const below = filter.children.get('file')!.node;
    this.replace(filter, below);
    await this.remove(filter);
  }

  /** blockdev-del, with QEMU's checks and messages. Implicit children that nothing else uses go too. */
  async del(nodeName: string): Promise<void> {
    const node = this.nodes.get(nodeName);
    if (node === undefined) throw new BlockLayerError(`Failed to find node with node-name='${nodeName}'`);
    this.checkDeletable(node);
    await this.remove(node);
  }

  /** The node, or undefined. */
  node(nodeName: string): BlockNode | undefined {
    return this.nodes.get(nodeName);
  }

  /** Resolves a `device` argument: a backend name or a node name. */
  lookup(deviceOrNode: string): BlockNode {
    const node = this.backends.get(deviceOrNode)?.node ?? this.nodes.get(deviceOrNode);
    if (node === undefined) {
      throw new BlockLayerError(`Cannot find device='${deviceOrNode}' nor node-name='${deviceOrNode}'`);
    }
    return node;
  }

  list(): BlockNode[] {
    return [...this.nodes.values()];
  }

  /**
   * Adds an edge from `parent` (a node, a job, an export …) to `node`, making
   * the node in use. A parent attached to a drained node is drained too
   * until the section ends.
   */
  attach(parent: NodeParent, node: BlockNode, role: string): NodeEdge {
    const edge = new NodeEdge(parent, node, role);
    node.parents.add(edge);
    try {
      node.refreshPermissions();
    } catch (error) {
      node.parents.delete(edge);
      refreshPermissionsAfter(node);
      throw error;
    }
    this.blockers.noteEdge(edge);
    for (const section of node.drainSections) {
      if (parent instanceof BlockNode) section.addNode(parent);
      else section.addUser(parent);
    }
    return edge;
  }

  detach(edge: NodeEdge): void {
    void this.release(edge);
  }

  /**
   * Detaches `edge`, and resolves once its node has closed if that was the
   * last user of a node only its users held (closeWithLastUser), else at
   * once: for a caller that reports the user gone only when the node is
   * (an export's BLOCK_EXPORT_DELETED).
   */
  release(edge: NodeEdge): Promise<void> {
    const { node } = edge;
    node.parents.delete(edge);
    refreshPermissionsAfter(node);
    for (const section of node.drainSections) section.userDetached(edge.parent);
    return this.closeIfLeft(node);
  }

  /**
   * Leaves `node` to its users, as QEMU leaves a node nobody added with
   * blockdev-add to the references its users hold (blockdev-snapshot-sync's
   * overlay): once the last of them lets go (an export deleted, a device
   * removed, a job ended), it closes, and the nodes below it that nobody
   * named or uses go with it. Moving its users elsewhere (`replace`) does
   * not close it: whoever moves them decides.
   */
  closeWithLastUser(node: BlockNode): void {
    this.heldByUsers.add(node);
  }

  /**
   * Closes `node` if only its users held it and none is left. It leaves the
   * graph at once; the close (a flush of its metadata) follows, and its
   * errors go unheard, as QEMU's bdrv_close ignores them.
   */
  closeIfLeft(node: BlockNode): Promise<void> {
    if (node.parents.size > 0 || !this.heldByUsers.has(node) || this.nodes.get(node.nodeName) !== node) return Promise.resolve();
    return this.remove(node).catch(() => undefined);
  }

  /** Creates the device `name` on `node`: the named backend an application does its I/O through. */
  attachBackend(name: string, nodeOrName: BlockNode | string): BlockBackend {
    checkDeviceName(name);
    if (this.backends.has(name)) throw new BlockLayerError(`Device with id '${name}' already exists`);
    if (this.nodes.has(name)) throw new BlockLayerError(`Device name '${name}' conflicts with an existing node name`);
    const node = typeof nodeOrName === 'string' ? this.lookup(nodeOrName) : nodeOrName;
    const backend = new BlockBackend(name, (parent) => this.attach(parent, node, 'root'));
    this.backends.set(name, backend);
    return backend;
  }

  detachBackend(name: string): void {
    const backend = this.backends.get(name);
    if (backend === undefined) throw new BlockLayerError(`Device '${name}' not found`, 'DeviceNotFound');
    const node = backend.edge.node;
    this.detach(backend.edge);
    this.backends.delete(name);
    this.hooks.backendDetached.call(name, node);
  }

  backend(name: string): BlockBackend | undefined {
    return this.backends.get(name);
  }

  listBackends(): BlockBackend[] {
    return [...this.backends.values()];
  }

  /** The device name of the backend on `node`, or '' (QEMU's bdrv_get_device_name). */
  deviceName(node: BlockNode): string {
    for (const edge of node.parents) if (edge.parent instanceof BlockBackend) return edge.parent.name;
    return '';
  }

  /**
   * QEMU's op blockers, as every job checks the nodes it is asked to use
   * (bdrv_op_is_blocked): a node a job holds (its blocker, e.g. "block
   * device is in use by block job: mirror") cannot be taken by another job:
   * "Node 'x' is busy: …", naming the node by its device name if it has one.
   */
  checkNotBusy(node: BlockNode): void {
    this.blockers.checkNotBusy(node);
  }

  /**
   * Why `node` may not be deleted or resized now, or undefined (QEMU's op
   * blockers for drive-del and resize): the newest blocker among the jobs
   * that hold it and the node it is the backing file of, whose blocker
   * stops both ops (jobs check the ops they need with checkNotBusy).
   */
  busyReason(node: BlockNode): string | undefined {
    return this.blockers.busyReason(node);
  }

  /**
   * A root node: only backends and exports use it, no parent node and no
   * job (QEMU's bdrv_is_root_node, which commands such as blockdev-mirror
   * require of their `device`).
   */
  isRoot(node: BlockNode): boolean {
    return [...node.parents].every((e) => e.parent.parentKind === 'backend' || e.parent.parentKind === 'export');
  }

  /**
   * Makes every user of `from` use `to` instead (QEMU's bdrv_replace_node),
   * except the edges of `to` and of the nodes below it, which would make a
   * loop: a filter inserted above `from` keeps it as its child. `keep`
   * leaves further edges where they are. Call inside a drained section of
   * `from`.
   */
  replace(from: BlockNode, to: BlockNode, keep: (edge: NodeEdge) => boolean = () => false): void {
    if (from === to) return;
    const below = subtree(to);
    for (const edge of [...from.parents]) {
      if ((edge.parent instanceof BlockNode && below.has(edge.parent)) || keep(edge)) continue;
      from.parents.delete(edge);
      edge.retarget(to);
      this.blockers.noteEdge(edge);
      to.parents.add(edge);
    }
    refreshPermissionsAfter(from);
    refreshPermissionsAfter(to);
    // What was above a drained node stays drained; the new node in between is drained with it.
    for (const section of from.drainSections) section.addNode(to);
    this.hooks.nodeReplaced.call(from, to);
  }

  /**
   * Points `node`'s backing link at `backing`, or removes it (QEMU's
   * bdrv_set_backing_hd), for the jobs that rewrite a backing chain
   * (stream, commit). An existing `backing` edge is re-pointed, so the
   * node's driver keeps the same child; a removed edge is detached. The node
   * the link left closes if nobody named it and nothing else uses it (with
   * the implicit nodes below it). The image is told separately
   * (`node.changeBackingFile`). Call with `node` drained.
   */
  async setBacking(node: BlockNode, backing: BlockNode | undefined): Promise<void> {
    const edge = node.children.get('backing');
    if (edge?.node === backing) return;
    if (backing !== undefined && subtree(backing).has(node)) {
      throw new BlockLayerError(`Making '${backing.nodeName}' a backing file of '${node.nodeName}' would create a loop`);
    }
    if (edge === undefined) {
      if (backing !== undefined) node.children.set('backing', this.attach(node, backing, 'backing'));
      return;
    }
    const old = edge.node;
    if (backing === undefined) {
      node.children.delete('backing');
      this.detach(edge);
    } else {
      old.parents.delete(edge);
      edge.retarget(backing);
      this.blockers.noteEdge(edge);
      backing.parents.add(edge);
      refreshPermissionsAfter(old);
      refreshPermissionsAfter(backing);
    }
    await this.closeIfUnused(old);
  }

  /**
   * Links `backing` (or nothing) below `node`, a node opened without its
   * backing file, and tells its driver; the image is left as it is (QEMU's
   * bdrv_set_backing_hd, as drive-mirror's end links its target's backing).
   * Call with `node` drained.
   */
  async linkBacking(node: BlockNode, backing: BlockNode | undefined): Promise<void> {
    if (node.children.get('backing')?.node === backing) return;
    if (node.driver.linkBacking === undefined) throw new BlockLayerError(`Driver '${node.driver.name}' does not support backing files`);
    await this.setBacking(node, backing);
    await node.driver.linkBacking(node.driverState, node.children.get('backing'));
  }

  /**
   * Opens the backing file `node`'s image names, for a node opened without
   * it (QEMU's bdrv_open_backing_file); nothing if it names none or the
   * node has a backing node already. What it opened closes again if it fails.
   */
  openBackingFile(node: BlockNode): Promise<void> {
    return this.opener.openBackingFile(node);
  }

  /** Closes every node, users first. */
  async closeAll(): Promise<void> {
    for (const backend of this.backends.values()) this.detach(backend.edge);
    this.backends.clear();
    while (this.nodes.size > 0) {
      const roots = [...this.nodes.values()].filter((n) => ![...n.parents].some((e) => e.parent instanceof BlockNode));
      const batch = roots.length > 0 ? roots : [...this.nodes.values()];
      for (const node of batch) {
        for (const edge of [...node.parents]) node.parents.delete(edge);
        await this.remove(node);
      }
    }
  }

  private checkDeletable(node: BlockNode): void {
    const users = [...node.parents].map((e) => e.parent);
    if (users.some((p) => p.parentKind === 'backend' || p.parentKind === 'export')) {
      throw new BlockLayerError(`Node ${node.nodeName} is in use`);
    }
    const blocker = this.busyReason(node);
    if (blocker !== undefined) throw new BlockLayerError(`Node '${node.nodeName}' is busy: ${blocker}`);
    if (node.implicit) throw new BlockLayerError(`Node ${node.nodeName} is not owned by the monitor`);
    if (users.length > 0) throw new BlockLayerError(`Block device ${node.nodeName} is in use`);
  }

  /** Closes `node`, with the nodeClosing hook run before its driver closes. */
  private closeNode(node: BlockNode): Promise<void> {
    return node.close(() => this.hooks.nodeClosing.promise(node));
  }

  /** Closes `node` (it has no users left) and the implicit children nothing else uses. */
  private async remove(node: BlockNode): Promise<void> {
    this.nodes.delete(node.nodeName);
    await this.closeNode(node);
    this.hooks.nodeRemoved.call(node);
    for (const edge of node.children.values()) {
      this.detach(edge);
      const child = edge.node;
      if (child.implicit && child.parents.size === 0 && this.nodes.get(child.nodeName) === child) await this.remove(child);
    }
  }
}

/** `node` and every node below it. */
function subtree(node: BlockNode): Set<BlockNode> {
  const found = new Set<BlockNode>([node]);
  for (const current of found) for (const edge of current.children.values()) found.add(edge.node);
  return found;
}
