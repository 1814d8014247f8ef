/** Plugin: QMP blockdev-create and its job type, `create` (a job, not a block job, as in QEMU). */
import { ContainerModule } from 'inversify';
import type { JobTypeContribution } from '../../core/job/job-type-contribution.js';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { BlockdevCreateCommand } from './blockdev-create-command.js';

const createJobType: JobTypeContribution = {
  type: 'create',
  summary: 'creates an image with a driver (blockdev-create)',
  blockJob: false,
};

const plugin: Plugin = {
  name: 'blockdev-create',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.JobTypeContribution).toConstantValue(createJobType);
    bind(TOKENS.CommandContribution).to(BlockdevCreateCommand).inSingletonScope();
  }),
};

export default plugin;
