/**
 * Opening nodes for the block graph: a node tree from validated
 * blockdev-add options (children first, with the read-only, no-flush and
 * discard settings they inherit), the further children a driver opens
 * itself (a backing file named in its image), and a job's filter node. It
 * reserves node names while it opens, so a concurrent open cannot take
 * them, names the nodes the user did not name, and closes again what a
 * failed open opened. The graph holds one and keeps the nodes it opened.
 */
import { BlockLayerError } from '../errors.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { type BaseNodeOptions, nodeSettings } from './base-options.js';
import { BlockNode } from './block-node.js';
import { BLOCKDEV_OPTIONS, type BlockdevOptionsValue } from './blockdev-ref.js';
import type { BlockDriverDefinition, ChildSpec, DriverOpenContext } from './driver.js';
import type { DriverRegistry } from './driver-registry.js';
import type { NodeEdge, NodeParent } from './node-edge.js';
import { checkNodeName } from './node-names.js';

/** What the opener needs of the graph. */
export interface OpenerGraph {
  /** The graph's nodes by name: an opened node is added, a discarded one removed. */
  readonly nodes: Map<string, BlockNode>;
  /** A backend of this name exists (node names may not clash with device ids). */
  hasBackend(name: string): boolean;
  /** Resolves a child given by reference (a backend or node name). */
  lookup(deviceOrNode: string): BlockNode;
  attach(parent: NodeParent, node: BlockNode, role: string): NodeEdge;
  detach(edge: NodeEdge): void;
  /** Lets the graph's nodeOpened hook read from a node opened, before it is announced. */
  nodeOpened(node: BlockNode): Promise<void>;
  /** Announces a node opened for good (the graph's nodeAdded hook). */
  nodeAdded(node: BlockNode): void;
  /** Closes a node as the graph does (with its nodeClosing hook). */
  close(node: BlockNode): Promise<void>;
}

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
  /** force-share unless the options say otherwise (inherited from the parent, as in QEMU). */
  inheritForceShare?: boolean;
  /** The root of an internal open: whoever opened it uses it (permissions.ts). */
  heldForUse?: boolean;
  /** Opened as a child other than a backing file: discard=unmap unless the options say otherwise (QEMU). */
  childUnmaps?: boolean;
  /** Opened to be checked (and maybe repaired): the driver tolerates what it would otherwise refuse. */
  check?: boolean;
}

export class NodeOpener {
  /** Names of nodes being opened, so a concurrent open cannot take them. */
  private readonly reserved = new Set<string>();
  private implicitNames = 0;

  constructor(
    private readonly graph: OpenerGraph,
    private readonly drivers: DriverRegistry,
    private readonly validator: QapiValidator,
  ) {}

  /**
   * Opens a validated option tree (children first) and announces its nodes;
   * if any fails, what was opened closes again. `implicit`: the root is
   * named like a nested node; `heldForUse`: whoever opens it uses it
   * (permissions.ts).
   */
  async openTree(
    options: BlockdevOptionsValue,
    given: Record<string, unknown>,
    { readOnly, implicit = false, check = false, heldForUse = false }: { readOnly: boolean; implicit?: boolean; check?: boolean; heldForUse?: boolean },
  ): Promise<BlockNode> {
    const names = this.reserveNames(options);
    const opened: BlockNode[] = [];
    try {
      const root = await this.openNode({ options, given, path: '', implicit, inheritReadOnly: readOnly, check, heldForUse }, opened);
      for (const node of opened) await this.graph.nodeOpened(node);
      for (const node of opened) this.graph.nodeAdded(node);
      return root;
    } catch (error) {
      await this.discardOpened(opened);
      throw error;
    } finally {
      for (const name of names) this.reserved.delete(name);
    }
  }

  /**
   * Opens a filter node of `driver` on top of `child` (a job's filter, such as
   * backup's copy-before-write; the driver need not be registered).
   */
  async openFilter(driver: BlockDriverDefinition, child: BlockNode, nodeName?: string): Promise<BlockNode> {
    if (nodeName !== undefined) {
      checkNodeName(nodeName);
      if (this.graph.nodes.has(nodeName) || this.reserved.has(nodeName) || this.graph.hasBackend(nodeName)) {
        throw new BlockLayerError(`Duplicate nodes with node-name='${nodeName}'`);
      }
      this.reserved.add(nodeName);
    }
    const name = nodeName ?? this.reserveImplicitName();
    const settings = nodeSettings({}, {}, child.readOnly);
    const node = new BlockNode(name, driver, { options: {}, given: {}, settings, implicit: nodeName === undefined, heldForUse: false });
    try {
      node.children.set('file', this.graph.attach(node, child, 'file'));
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
      for (const edge of node.children.values()) this.graph.detach(edge);
      throw error;
    } finally {
      this.reserved.delete(name);
    }
    this.graph.nodes.set(name, node);
    this.graph.nodeAdded(node);
    return node;
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
      for (const opening of opened) await this.graph.nodeOpened(opening);
    } catch (error) {
      const edge = node.children.get('backing');
      if (edge !== undefined) {
        node.children.delete('backing');
        this.graph.detach(edge);
      }
      await this.discardOpened(opened);
      throw error;
    }
    for (const opening of opened) this.graph.nodeAdded(opening);
  }

  /** Undoes a failed open: the nodes it opened close, newest first. */
  private async discardOpened(opened: BlockNode[]): Promise<void> {
    for (const node of opened.reverse()) {
      for (const edge of node.children.values()) this.graph.detach(edge);
      await this.graph.close(node).catch(() => undefined);
      this.graph.nodes.delete(node.nodeName);
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
        if (this.graph.nodes.has(name) || this.reserved.has(name) || names.includes(name)) {
          throw new BlockLayerError(`Duplicate nodes with node-name='${name}'`);
        }
        if (this.graph.hasBackend(name)) throw new BlockLayerError(`node-name=${name} is conflicting with a device id`);
        names.push(name);
      }
      for (const spec of this.drivers.require(tree.driver).children ?? []) {
        for (const [, child] of childRefs(spec, tree)) {
          if (typeof child === 'string') this.graph.lookup(child);
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
    const settings = nodeSettings(options as BaseNodeOptions, request.given as BaseNodeOptions, request.inheritReadOnly, {
      inheritNoFlush: request.inheritNoFlush ?? false,
      inheritForceShare: request.inheritForceShare ?? false,
      childUnmaps: request.childUnmaps ?? false,
    });
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
      heldForUse: request.heldForUse ?? false,
    });
    try {
      for (const spec of driver.children ?? []) {
        const given = childRefs(spec, request.given);
        for (const [index, [role, ref]] of childRefs(spec, options).entries()) {
          if (ref === undefined || ref === null) continue;
          const childReadOnly = settings.readOnly || (spec.readOnly ?? false);
          const child = typeof ref === 'string'
            ? this.graph.lookup(ref)
            : await this.openNode(
                {
                  options: ref as BlockdevOptionsValue,
                  given: given[index]![1] as Record<string, unknown>,
                  path: join(request.path, role),
                  implicit: true,
                  inheritReadOnly: childReadOnly,
                  inheritNoFlush: settings.noFlush,
                  inheritForceShare: settings.forceShare,
                  childUnmaps: role !== 'backing',
                },
                opened,
              );
          node.children.set(role, this.graph.attach(node, child, role));
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
      node.refreshPermissions();
    } catch (error) {
      if (node.isOpen) await node.close();
      for (const edge of node.children.values()) this.graph.detach(edge);
      throw error;
    } finally {
      if (options['node-name'] === undefined) this.reserved.delete(nodeName);
    }
    this.graph.nodes.set(nodeName, node);
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
        inheritForceShare: node.settings.forceShare,
        childUnmaps: role !== 'backing',
      };
      const child = await this.openNode(childRequest, opened).finally(() => {
        for (const name of names) this.reserved.delete(name);
      });
      const edge = this.graph.attach(node, child, role);
      node.children.set(role, edge);
      return edge;
    };
  }

  /** QEMU names nested nodes the user did not name '#blockNNN'. */
  private reserveImplicitName(): string {
    let name: string;
    do name = `#block${String(++this.implicitNames).padStart(3, '0')}`;
    while (this.graph.nodes.has(name) || this.reserved.has(name));
    this.reserved.add(name);
    return name;
  }
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
