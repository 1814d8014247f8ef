/**
 * The block graph: named nodes, the edges between them and to their users,
 * and named backends. Opens node trees from QEMU's blockdev-add options,
 * deletes them under QEMU's in-use rules, and replaces one node by another
 * for all its users.
 */
import { inject, injectable } from 'inversify';
import { BlockLayerError } from '../errors.js';
import type { BlockLayerHooks } from '../hooks/block-layer-hooks.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';
import { type BaseNodeOptions, nodeSettings } from './base-options.js';
import { BlockBackend } from './block-backend.js';
import { BlockNode } from './block-node.js';
import { BLOCKDEV_OPTIONS, type BlockdevOptionsValue } from './blockdev-ref.js';
import type { BlockDriverDefinition, ChildSpec, DriverOpenContext } from './driver.js';
import type { DriverRegistry } from './driver-registry.js';
import { NodeEdge, type NodeParent } from './node-edge.js';
import { checkDeviceName, checkNodeName } from './node-names.js';

interface OpenRequest {
  /** Validated, defaults applied. */
  options: BlockdevOptionsValue;
  /** As the user wrote them (for the node's json: filename). */
  given: Record<string, unknown>;
  /** Where these options sit in the blockdev-add tree, for messages ('file'). */
  path: string;
  /** Opened as part of another node's options. */
  implicit: boolean;
  /** Read-only unless the options say otherwise (children inherit from their parent). */
  inheritReadOnly: boolean;
  /** cache.no-flush unless the options say otherwise (inherited from the parent, as in QEMU). */
  inheritNoFlush?: boolean;
  /** Opened as a child other than a backing file: discard=unmap unless the options say otherwise (QEMU). */
  childUnmaps?: boolean;
  /** Opened to be checked (and maybe repaired): the driver tolerates what it would otherwise refuse. */
  check?: boolean;
}

@injectable()
export class BlockGraph {
  private readonly nodes = new Map<string, BlockNode>();
  /** Names of nodes being opened, so a concurrent open cannot take them. */
  private readonly reserved = new Set<string>();
  private readonly backends = new Map<string, BlockBackend>();
  private implicitNames = 0;
  /**
   * When each edge was made or last re-pointed, and for a backing edge the
   * op blocker it puts on its node (QEMU's backing_blocker, worded when the
   * link is made): a node reports its newest blocker, as QEMU does.
   */
  private readonly edgeNotes = new WeakMap<NodeEdge, { at: number; backingBlocker?: string }>();
  private edgeCount = 0;

  constructor(
    @inject(TOKENS.DriverRegistry) private readonly drivers: DriverRegistry,
    @inject(TOKENS.QapiValidator) private readonly validator: QapiValidator,
    @inject(TOKENS.BlockLayerHooks) private readonly hooks: BlockLayerHooks,
  ) {}

  /**
   * blockdev-add: validates the whole option tree, then opens it (children
   * first). The root must be named; nested nodes without a name get one.
   */
  async add(options: unknown): Promise<BlockNode> {
    const valid = this.validator.validate(this.validator.lookup(BLOCKDEV_OPTIONS)!, options) as BlockdevOptionsValue;
    if (valid['node-name'] === undefined) {
      throw new BlockLayerError("'node-name' must be specified for the root node");
    }
    return this.openTree(valid, options as Record<string, unknown>, false);
  }

  /**
   * Opens a node tree for internal use (drive-backup's target, a test). A
   * root without a name is named like a nested node and, as one, goes away
   * with `closeIfUnused` once its users are gone.
   */
  async open(options: BlockdevOptionsValue, how: { readOnly?: boolean; check?: boolean } = {}): Promise<BlockNode> {
    const valid = this.validator.validate(this.validator.lookup(BLOCKDEV_OPTIONS)!, options) as BlockdevOptionsValue;
    return this.openTree(valid, options, how.readOnly ?? false, valid['node-name'] === undefined, how.check ?? false);
  }

  /** Closes a node nobody named and nobody uses any more (an internal open's root). */
  async closeIfUnused(node: BlockNode): Promise<void> {
    if (node.implicit && node.parents.size === 0 && this.nodes.get(node.nodeName) === node) await this.remove(node);
  }

  /**
   * Opens a filter node of `driver` on top of `child` (a job's filter, such as
   * backup's copy-before-write; the driver need not be registered). Its
   * users are moved onto it separately, with `replace`.
   */
  async openFilter(driver: BlockDriverDefinition, child: BlockNode, nodeName?: string): Promise<BlockNode> {
    if (nodeName !== undefined) {
      checkNodeName(nodeName);
      if (this.nodes.has(nodeName) || this.reserved.has(nodeName) || this.backends.has(nodeName)) {
        throw new BlockLayerError(`Duplicate nodes with node-name='${nodeName}'`);
      }
      this.reserved.add(nodeName);
    }
    const name = nodeName ?? this.reserveImplicitName();
    const settings = nodeSettings({}, {}, child.readOnly);
    const node = new BlockNode(name, driver, { options: {}, given: {}, settings, implicit: nodeName === undefined });
    try {
      node.children.set('file', this.attach(node, child, 'file'));
      node.activate(
        await driver.open({
          options: {},
          givenOptions: {},
          nodeName: name,
          readOnly: settings.readOnly,
          autoReadOnly: false,
          check: false,
          fallBackToReadOnly: () => undefined,
          children: node.children,
          openChild: () => Promise.reject(new BlockLayerError(`Filter '${driver.name}' cannot open children`)),
        }),
      );
    } catch (error) {
      for (const edge of node.children.values()) this.detach(edge);
      throw error;
    } finally {
      this.reserved.delete(name);
    }
    this.nodes.set(name, node);
    this.hooks.nodeAdded.call(node);
    return node;
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
    this.noteEdge(edge);
    node.parents.add(edge);
    for (const section of node.drainSections) {
      if (parent instanceof BlockNode) section.addNode(parent);
      else section.addUser(parent);
    }
    return edge;
  }

  detach(edge: NodeEdge): void {
    edge.node.parents.delete(edge);
    for (const section of edge.node.drainSections) section.userDetached(edge.parent);
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
    const blocker = blockerOf(node);
    if (blocker === undefined) return;
    const name = this.deviceName(node) || node.nodeName;
    throw new BlockLayerError(`Node '${name}' is busy: ${blocker}`);
  }

  /**
   * Why `node` may not be deleted or resized now, or undefined (QEMU's op
   * blockers for drive-del and resize): the newest blocker among the jobs
   * that hold it and the node it is the backing file of, whose blocker
   * stops both ops (jobs check the ops they need with checkNotBusy).
   */
  busyReason(node: BlockNode): string | undefined {
    let newest: { at: number; reason: string } | undefined;
    for (const edge of node.parents) {
      const note = this.edgeNotes.get(edge);
      const reason = edge.parent.blocker ?? note?.backingBlocker;
      if (reason !== undefined && (newest === undefined || (note?.at ?? 0) > newest.at)) newest = { at: note?.at ?? 0, reason };
    }
    return newest?.reason;
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
      this.noteEdge(edge);
      to.parents.add(edge);
    }
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
      this.noteEdge(edge);
      backing.parents.add(edge);
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
  async openBackingFile(node: BlockNode): Promise<void> {
    if (node.children.has('backing') || node.driver.openBackingFile === undefined) return;
    const opened: BlockNode[] = [];
    try {
      await node.driver.openBackingFile(node.driverState, this.childOpener(node, '', opened));
    } catch (error) {
      const edge = node.children.get('backing');
      if (edge !== undefined) {
        node.children.delete('backing');
        this.detach(edge);
      }
      await this.discardOpened(opened);
      throw error;
    }
    for (const opening of opened) this.hooks.nodeAdded.call(opening);
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

  private async openTree(
    options: BlockdevOptionsValue,
    given: Record<string, unknown>,
    readOnly: boolean,
    implicit = false,
    check = false,
  ): Promise<BlockNode> {
    const names = this.reserveNames(options);
    const opened: BlockNode[] = [];
    try {
      const root = await this.openNode({ options, given, path: '', implicit, inheritReadOnly: readOnly, check }, opened);
      for (const node of opened) this.hooks.nodeAdded.call(node);
      return root;
    } catch (error) {
      await this.discardOpened(opened);
      throw error;
    } finally {
      for (const name of names) this.reserved.delete(name);
    }
  }

  /** Undoes a failed open: the nodes it opened close, newest first. */
  private async discardOpened(opened: BlockNode[]): Promise<void> {
    for (const node of opened.reverse()) {
      for (const edge of node.children.values()) this.detach(edge);
      await node.close().catch(() => undefined);
      this.nodes.delete(node.nodeName);
    }
  }

  /**
   * Checks every node name of the tree and the nodes it refers to before
   * anything is opened, and reserves the names so a concurrent open cannot
   * take them. The caller releases them.
   */
  private reserveNames(options: BlockdevOptionsValue): string[] {
    const names: string[] = [];
    const visit = (tree: BlockdevOptionsValue): void => {
      const name = tree['node-name'];
      if (name !== undefined) {
        checkNodeName(name);
        if (this.nodes.has(name) || this.reserved.has(name) || names.includes(name)) {
          throw new BlockLayerError(`Duplicate nodes with node-name='${name}'`);
        }
        if (this.backends.has(name)) throw new BlockLayerError(`node-name=${name} is conflicting with a device id`);
        names.push(name);
      }
      for (const spec of this.drivers.require(tree.driver).children ?? []) {
        for (const [, child] of childRefs(spec, tree)) {
          if (typeof child === 'string') this.lookup(child);
          else if (child !== null && typeof child === 'object') visit(child as BlockdevOptionsValue);
        }
      }
    };
    visit(options);
    for (const name of names) this.reserved.add(name);
    return names;
  }

  private async openNode(request: OpenRequest, opened: BlockNode[]): Promise<BlockNode> {
    const { options } = request;
    const driver = this.drivers.require(options.driver);
    const nodeName = options['node-name'] ?? this.reserveImplicitName();
    const settings = nodeSettings(
      options as BaseNodeOptions,
      request.given as BaseNodeOptions,
      request.inheritReadOnly,
      request.inheritNoFlush ?? false,
      request.childUnmaps ?? false,
    );
    if ((options as BaseNodeOptions)['force-share'] === true && !settings.readOnly) {
      throw new BlockLayerError('force-share=on can only be used with read-only images');
    }
    if ((options as BaseNodeOptions).cache?.direct === true) {
      throw new BlockLayerError(`Node '${nodeName}': cache.direct=on is not supported (blocklayer uses the host page cache)`);
    }
    const node = new BlockNode(nodeName, driver, {
      options: driverMembers(driver, options),
      given: driverMembers(driver, request.given as BlockdevOptionsValue),
      settings,
      implicit: request.implicit,
    });
    try {
      for (const spec of driver.children ?? []) {
        const given = childRefs(spec, request.given);
        for (const [index, [role, ref]] of childRefs(spec, options).entries()) {
          if (ref === undefined || ref === null) continue;
          const childReadOnly = settings.readOnly || (spec.readOnly ?? false);
          const child = typeof ref === 'string'
            ? this.lookup(ref)
            : await this.openNode(
                {
                  options: ref as BlockdevOptionsValue,
                  given: given[index]![1] as Record<string, unknown>,
                  path: join(request.path, role),
                  implicit: true,
                  inheritReadOnly: childReadOnly,
                  inheritNoFlush: settings.noFlush,
                  childUnmaps: role !== 'backing',
                },
                opened,
              );
          node.children.set(role, this.attach(node, child, role));
        }
      }
      const context: DriverOpenContext<unknown> = {
        options: node.options,
        givenOptions: node.givenOptions,
        nodeName,
        readOnly: settings.readOnly,
        autoReadOnly: settings.autoReadOnly,
        check: request.check ?? false,
        fallBackToReadOnly: () => node.fallBackToReadOnly(),
        children: node.children,
        openChild: this.childOpener(node, request.path, opened),
      };
      node.activate(await driver.open(context));
    } catch (error) {
      for (const edge of node.children.values()) this.detach(edge);
      throw error;
    } finally {
      if (options['node-name'] === undefined) this.reserved.delete(nodeName);
    }
    this.nodes.set(nodeName, node);
    opened.push(node);
    return node;
  }

  /** A driver's `openChild` for `node`: opens a further child of it (a backing file named in its image). */
  private childOpener(node: BlockNode, parentPath: string, opened: BlockNode[]): DriverOpenContext<unknown>['openChild'] {
    return async (role, childOptions, childReadOnly) => {
      const path = join(parentPath, role);
      const valid = this.validator.validate(this.validator.lookup(BLOCKDEV_OPTIONS)!, childOptions, path) as BlockdevOptionsValue;
      const names = this.reserveNames(valid);
      const childRequest = {
        options: valid,
        given: childOptions,
        path,
        implicit: true,
        inheritReadOnly: childReadOnly,
        inheritNoFlush: node.settings.noFlush,
        childUnmaps: role !== 'backing',
      };
      const child = await this.openNode(childRequest, opened).finally(() => {
        for (const name of names) this.reserved.delete(name);
      });
      const edge = this.attach(node, child, role);
      node.children.set(role, edge);
      return edge;
    };
  }

  /** Stamps an edge made or re-pointed; a node's backing link words its blocker with the parent's name now. */
  private noteEdge(edge: NodeEdge): void {
    const parent = edge.parent;
    const cow = edge.role === 'backing' && parent instanceof BlockNode && parent.driver.kind !== 'filter';
    const backingBlocker = cow ? `node is used as backing hd of '${this.deviceName(parent) || parent.nodeName}'` : undefined;
    this.edgeNotes.set(edge, { at: ++this.edgeCount, ...(backingBlocker === undefined ? {} : { backingBlocker }) });
  }

  /** QEMU names nested nodes the user did not name '#blockNNN'. */
  private reserveImplicitName(): string {
    let name: string;
    do name = `#block${String(++this.implicitNames).padStart(3, '0')}`;
    while (this.nodes.has(name) || this.reserved.has(name));
    this.reserved.add(name);
    return name;
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

  /** Closes `node` (it has no users left) and the implicit children nothing else uses. */
  private async remove(node: BlockNode): Promise<void> {
    this.nodes.delete(node.nodeName);
    await node.close();
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

/** Why a user of `node` keeps other jobs off it, if one does (the first such user's blocker). */
function blockerOf(node: BlockNode): string | undefined {
  for (const edge of node.parents) if (edge.parent.blocker !== undefined) return edge.parent.blocker;
  return undefined;
}

/** The children `spec` names in `options`, by role: its member, or `name.0`, `name.1` … for a list. */
function childRefs(spec: ChildSpec, options: Record<string, unknown>): [string, unknown][] {
  const value = options[spec.name];
  if (spec.list !== true) return [[spec.name, value]];
  return Array.isArray(value) ? value.map((ref, i): [string, unknown] => [`${spec.name}.${i}`, ref]) : [];
}

function join(path: string, member: string): string {
  return path === '' ? member : `${path}.${member}`;
}

/** The driver's own members of `options` (child members included), without the base members. */
function driverMembers(driver: BlockDriverDefinition, options: BlockdevOptionsValue): Record<string, unknown> {
  const own: Record<string, unknown> = {};
  for (const key of Object.keys(driver.options.properties)) {
    if (options[key] !== undefined) own[key] = options[key];
  }
  return own;
}
