/**
 * The drivers of this layer, by name. Builds BlockdevOptions, the flat union
 * (tag `driver`) of every driver's options behind the base members, so
 * blockdev-add, `--blockdev` and nested child options are validated by one
 * schema that grows with each driver plugin; and BlockdevCreateOptions, the
 * same for blockdev-create (an empty branch for a driver without it, as in
 * QEMU's schema).
 */
import { inject, injectable } from 'inversify';
import { BlockLayerError } from '../errors.js';
import { NamedRegistry, type Disposable } from '../plugin/named-registry.js';
import { Qapi, type TObject } from '../schema/qapi.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';
import { baseNodeMembers } from './base-options.js';
import { BLOCKDEV_OPTIONS } from './blockdev-ref.js';
import type { BlockDriverDefinition } from './driver.js';

/** The union blockdev-create's `options` are validated against. */
export const BLOCKDEV_CREATE_OPTIONS = 'BlockdevCreateOptions';

/** QAPI-style type name for a driver's branch: 'null-co' → 'BlockdevOptionsNullCo'. */
function branchName(driver: string, prefix = 'BlockdevOptions'): string {
  return `${prefix}${driver
    .split(/[-_]/)
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('')}`;
}

@injectable()
export class DriverRegistry {
  private readonly drivers = new NamedRegistry<BlockDriverDefinition>('driver');

  constructor(@inject(TOKENS.QapiValidator) private readonly validator: QapiValidator) {
    this.publishSchema();
  }

  register(definition: BlockDriverDefinition, plugin: string): Disposable {
    const registration = this.drivers.register(definition.name, definition, plugin);
    this.publishSchema();
    return {
      dispose: () => {
        registration.dispose();
        this.publishSchema();
      },
    };
  }

  get(name: string): BlockDriverDefinition | undefined {
    return this.drivers.get(name);
  }

  /** The driver or a GenericError as QEMU words an unknown driver. */
  require(name: string): BlockDriverDefinition {
    const driver = this.drivers.get(name);
    if (driver === undefined) throw new BlockLayerError(`Unknown driver '${name}'`);
    return driver;
  }

  owner(name: string): string | undefined {
    return this.drivers.owner(name);
  }

  list(): BlockDriverDefinition[] {
    return this.drivers.values();
  }

  /** The branch of BlockdevOptions for one driver. */
  branch(definition: BlockDriverDefinition): TObject {
    return Qapi.struct(branchName(definition.name), {
      driver: Qapi.literal(definition.name),
      ...baseNodeMembers,
      ...definition.options.properties,
    });
  }

  /** The branch of BlockdevCreateOptions for one driver (just `driver` if it has no blockdev-create). */
  createBranch(definition: BlockDriverDefinition): TObject {
    return Qapi.struct(branchName(definition.name, 'BlockdevCreateOptions'), {
      driver: Qapi.literal(definition.name),
      ...definition.blockdevCreateOptions?.properties,
    });
  }

  private publishSchema(): void {
    const branches = this.drivers.values().map((d) => this.branch(d));
    this.validator.define({ ...Qapi.flatUnion(BLOCKDEV_OPTIONS, 'driver', branches), $id: BLOCKDEV_OPTIONS });
    const createBranches = this.drivers.values().map((d) => this.createBranch(d));
    this.validator.define({
      ...Qapi.flatUnion(BLOCKDEV_CREATE_OPTIONS, 'driver', createBranches),
      $id: BLOCKDEV_CREATE_OPTIONS,
    });
  }
}
