/**
 * Runs a transaction as QEMU 7.2 does: drain everything once, prepare each
 * action in order (each keeps its nodes drained until cleanup); on the
 * first failure abort the prepared actions in reverse and clean all; else
 * commit all in order, then clean all. Nothing is changed unless
 * everything is.
 */
import { inject, injectable } from 'inversify';
import type { BlockGraph } from '../block/block-graph.js';
import type { BlockNode } from '../block/block-node.js';
import { DrainSection } from '../block/drain-section.js';
import { BlockLayerError } from '../errors.js';
import type { JobManager } from '../job/job-manager.js';
import { TOKENS } from '../tokens.js';
import type { PreparedAction, TransactionContext } from './transaction-action.js';
import type { TransactionActionRegistry } from './transaction-action-registry.js';

export interface TransactionStep {
  type: string;
  data: unknown;
}

@injectable()
export class TransactionRunner {
  constructor(
    @inject(TOKENS.TransactionActionRegistry) private readonly actions: TransactionActionRegistry,
    @inject(TOKENS.JobManager) private readonly jobs: JobManager,
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
  ) {}

  async run(steps: readonly TransactionStep[], completionMode: 'individual' | 'grouped' = 'individual'): Promise<void> {
    const sections: DrainSection[] = [];
    const context: TransactionContext = {
      completionMode,
      jobTxn: completionMode === 'grouped' ? this.jobs.createTxn() : undefined,
      drain: async (node: BlockNode) => {
        sections.push(await node.drain());
      },
    };
    await this.drainAll();
    const prepared: PreparedAction[] = [];
    try {
      for (const step of steps) {
        const action = this.actions.get(step.type);
        if (action === undefined) throw new BlockLayerError(`Parameter 'type' does not accept value '${step.type}'`);
        if (completionMode === 'grouped' && !action.groupable) {
          throw new BlockLayerError(`Action '${step.type}' does not support Transaction property completion-mode = grouped`);
        }
        prepared.push(await action.prepare(step.data, context));
      }
    } catch (error) {
      for (const action of [...prepared].reverse()) await action.abort?.();
      await this.clean(prepared, sections);
      throw error;
    }
    for (const action of prepared) await action.commit?.();
    await this.clean(prepared, sections);
  }

  private async clean(prepared: readonly PreparedAction[], sections: DrainSection[]): Promise<void> {
    for (const action of prepared) await action.clean?.();
    for (const section of sections.splice(0).reverse()) section.end();
  }

  /** QEMU's bdrv_drain_all before a transaction: every job pauses once and resumes. */
  private async drainAll(): Promise<void> {
    const section = new DrainSection();
    for (const node of this.graph.list()) section.addNode(node);
    await section.settle();
    section.end();
  }
}
