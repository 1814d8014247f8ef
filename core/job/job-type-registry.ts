/** Job types by QEMU type name; a second plugin contributing the same type is a load error. */
import { injectable } from 'inversify';
import { NamedRegistry, type Disposable } from '../plugin/named-registry.js';
import type { JobTypeContribution } from './job-type-contribution.js';

@injectable()
export class JobTypeRegistry {
  private readonly types = new NamedRegistry<JobTypeContribution>('job type');

  register(contribution: JobTypeContribution, plugin: string): Disposable {
    return this.types.register(contribution.type, contribution, plugin);
  }

  get(type: string): JobTypeContribution | undefined {
    return this.types.get(type);
  }

  list(): JobTypeContribution[] {
    return this.types.values();
  }
}
