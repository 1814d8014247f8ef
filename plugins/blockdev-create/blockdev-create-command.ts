/**
 * blockdev-create: checks that the driver can create (after the schema,
 * which knows every driver's options), then starts a job of type `create`
 * that does the work, as QEMU does: auto-finalized, but kept once concluded
 * until job-dismiss, so its result can be read with query-jobs.
 */
import { inject, injectable } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { DriverRegistry } from '../../core/block/driver-registry.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import { BlockLayerError } from '../../core/errors.js';
import type { JobManager } from '../../core/job/job-manager.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { TOKENS } from '../../core/tokens.js';
import { CreateJob } from './create-job.js';
import { BlockdevCreateArgs, type BlockdevCreateArgsValue } from './options.js';

@injectable()
export class BlockdevCreateCommand implements QmpCommand<BlockdevCreateArgsValue> {
  readonly name = 'blockdev-create';
  readonly summary = 'Create an image file, or format a node, in a job of type create';
  readonly args = BlockdevCreateArgs;

  constructor(
    @inject(TOKENS.DriverRegistry) private readonly drivers: DriverRegistry,
    @inject(TOKENS.JobManager) private readonly jobs: JobManager,
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.ImageCreator) private readonly creator: ImageCreator,
  ) {}

  execute(args: BlockdevCreateArgsValue): void {
    const { driver: name, ...options } = args.options;
    const driver = this.drivers.require(name);
    if (driver.blockdevCreate === undefined) throw new BlockLayerError('Driver does not support blockdev-create');
    const services = { graph: this.graph, creator: this.creator };
    const job = this.jobs.create({
      id: args['job-id'],
      type: 'create',
      autoFinalize: true,
      autoDismiss: false,
      driver: (created) => new CreateJob(created, driver, options, services),
    });
    job.start();
  }
}
