/**
 * Creates images through drivers' `create` (qemu-img create, drive-backup's
 * new target, the daemon's default disk). Options are validated against the
 * driver's create schema first.
 */
import { inject, injectable } from 'inversify';
import { BlockLayerError } from '../errors.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';
import type { DriverRegistry } from './driver-registry.js';

@injectable()
export class ImageCreator {
  constructor(
    @inject(TOKENS.DriverRegistry) private readonly drivers: DriverRegistry,
    @inject(TOKENS.QapiValidator) private readonly validator: QapiValidator,
  ) {}

  async create(driverName: string, options: Record<string, unknown>): Promise<void> {
    const driver = this.drivers.require(driverName);
    if (driver.create === undefined || driver.createOptions === undefined) {
      throw new BlockLayerError(`Driver '${driverName}' does not support image creation`);
    }
    const valid = this.validator.validate(driver.createOptions, options);
    await driver.create({ options: valid, createWith: (name, more) => this.create(name, more) });
  }
}
