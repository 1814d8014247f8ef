/** Publishes QMP events: stamps them and calls the `event` hook, which the QMP server and plugins tap. */
import { inject, injectable } from 'inversify';
import { TOKENS } from '../tokens.js';
import { type BlockLayerHooks, makeEvent } from './block-layer-hooks.js';

@injectable()
export class EventPublisher {
  constructor(@inject(TOKENS.BlockLayerHooks) private readonly hooks: BlockLayerHooks) {}

  publish(event: string, data?: Record<string, unknown>): void {
    this.hooks.event.call(makeEvent(event, data));
  }
}
