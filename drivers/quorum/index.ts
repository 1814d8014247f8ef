/** Plugin: the quorum driver, given the layer's event publisher and graph (its events name the quorum's device). */
import { ContainerModule } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { EventPublisher } from '../../core/hooks/event-publisher.js';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { PLUGIN_API_VERSION } from '../../core/version.js';
import { createQuorumDriver } from './driver.js';
import { quorumEvents } from './quorum-events.js';

const plugin: Plugin = {
  name: 'quorum',
  version: '0.1.0',
  apiVersion: PLUGIN_API_VERSION,
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.BlockDriverContribution)
      .toDynamicValue((ctx) => {
        const publisher = ctx.get<EventPublisher>(TOKENS.EventPublisher);
        const graph = ctx.get<BlockGraph>(TOKENS.BlockGraph);
        return createQuorumDriver((nodeName) =>
          quorumEvents(
            (event, data) => publisher.publish(event, data),
            () => {
              const node = graph.node(nodeName);
              return (node === undefined ? '' : graph.deviceName(node)) || nodeName;
            },
          ),
        );
      })
      .inSingletonScope();
  }),
};

export default plugin;
