/**
 * Creates images through drivers' `create` (qemu-img create, drive-backup's
 * new target, the daemon's default disk). Options are validated against the
 * driver's create schema first. An image file a node of this layer has open
 * is refused: creating truncates, and blocklayer takes no file locks that
 * would stop it the way QEMU's do.
 */
import { stat } from 'node:fs/promises';
import { inject, injectable } from 'inversify';
import { BlockLayerError } from '../errors.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';
import type { BlockGraph } from './block-graph.js';
import type { DriverRegistry } from './driver-registry.js';
import type { NodeChild, NodeParent } from './node-edge.js';

@injectable()
export class ImageCreator {
  constructor(
    @inject(TOKENS.DriverRegistry) private readonly drivers: DriverRegistry,
    @inject(TOKENS.QapiValidator) private readonly validator: QapiValidator,
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
  ) {}

  async create(driverName: string, options: Record<string, unknown>): Promise<void> {
    const driver = this.drivers.require(driverName);
    if (driver.create === undefined || driver.createOptions === undefined) {
      throw new BlockLayerError(`Driver '${driverName}' does not support image creation`);
    }
    const valid = this.validator.validate(driver.createOptions, options);
    if (typeof valid.filename === 'string') await this.checkNotOpen(valid.filename);
    await driver.create({
      options: valid,
      createWith: (name, more) => this.create(name, more),
      writeCreated: (name, filename, body) => this.writeCreated(name, filename, body),
    });
  }

  /** Opens the new file as a node of `driver`, a writing user of it while `body` runs, and closes it after. */
  private async writeCreated<T>(driver: string, filename: string, body: (file: NodeChild) => Promise<T>): Promise<T> {
    const node = await this.graph.open({ driver, filename });
    const creation: NodeParent = { parentName: '', parentKind: 'other', writes: true };
    const edge = this.graph.attach(creation, node, 'file');
    try {
      return await body(edge);
    } finally {
      this.graph.detach(edge);
      await this.graph.closeIfUnused(node);
    }
  }

  /** Refuses an existing file that a protocol node of this layer has open (blockdev-create's check too). */
  async checkNotOpen(filename: string): Promise<void> {
    const existing = await stat(filename).catch(() => undefined);
    if (existing === undefined) return;
    for (const node of this.graph.list()) {
      if (node.driver.kind !== 'protocol' || !node.isOpen) continue;
      const path = (await node.driver.describe?.(node.driverState))?.filename;
      const open = path === undefined ? undefined : await stat(path).catch(() => undefined);
      if (open !== undefined && open.dev === existing.dev && open.ino === existing.ino) {
        throw new BlockLayerError(`Could not create '${filename}': the image is open as node '${node.nodeName}'`);
      }
    }
  }
}
