/** Plugin: query-jobs, query-block-jobs and the job-* / block-job-* verbs. */
import { ContainerModule } from 'inversify';
import type { JobManager } from '../../core/job/job-manager.js';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { jobVerbCommands } from './job-verbs.js';
import { queryJobsCommands } from './query-jobs.js';

const plugin: Plugin = {
  name: 'job-commands',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    for (const family of [queryJobsCommands, jobVerbCommands]) {
      bind(TOKENS.CommandContribution)
        .toDynamicValue((context) => family(context.get<JobManager>(TOKENS.JobManager)))
        .inSingletonScope();
    }
  }),
};

export default plugin;
