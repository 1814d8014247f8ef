import test from 'ava';
import { ContainerModule, inject, injectable } from 'inversify';
import type { BlockLayerEvent } from '../../../core/hooks/block-layer-hooks.js';
import type { EventPublisher } from '../../../core/hooks/event-publisher.js';
import type { Plugin } from '../../../core/plugin/plugin.js';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import type { QmpCommand } from '../../../core/qmp/qmp-command.js';
import { connectQmp, createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';

/** A command that publishes an event while it runs, as job commands do. */
@injectable()
class EmitCommand implements QmpCommand {
  readonly name = 'x-emit';
  readonly summary = 'test: publish X_TEST_EVENT';
  constructor(@inject(TOKENS.EventPublisher) private readonly events: EventPublisher) {}
  execute(): void {
    this.events.publish('X_TEST_EVENT', { id: 'e1', status: 'created' });
  }
}

const emitter: Plugin = {
  name: 'x-emit',
  version: '0.0.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.CommandContribution).to(EmitCommand).inSingletonScope();
  }),
};

test('events reach negotiated clients before the reply of the command that caused them', async (t) => {
  const layer = await createTestLayer({ plugins: [emitter] });
  const seen: BlockLayerEvent[] = [];
  layer.hooks.event.tap('test', (e) => seen.push(e));
  const first = await connectQmp(layer);
  const before = Date.now() / 1000;
  t.deepEqual(await first.client.execute('x-emit', undefined, 'req1'), { return: {}, id: 'req1' });
  const [event, reply] = first.client.transcript.slice(-2);
  t.deepEqual(Object.keys(event!), ['timestamp', 'event', 'data'], 'QEMU member order');
  t.is(event!.event, 'X_TEST_EVENT');
  t.deepEqual(event!.data, { id: 'e1', status: 'created' });
  const timestamp = event!.timestamp as { seconds: number; microseconds: number };
  t.true(Math.abs(timestamp.seconds - before) < 5);
  t.true(Number.isInteger(timestamp.microseconds) && timestamp.microseconds >= 0 && timestamp.microseconds < 1e6);
  t.deepEqual(reply, { return: {}, id: 'req1' });
  t.is(seen.length, 1, 'plugins see the same event through the hook');
  await first.close();
  await layer.close();
});

test('clients still negotiating get no events; every negotiated client gets each event', async (t) => {
  const layer = await createTestLayer({ plugins: [emitter] });
  const a = await connectQmp(layer);
  const b = await QmpClient.connect(a.socketPath, { negotiate: true });
  const c = await QmpClient.connect(a.socketPath, { negotiate: false });
  await a.client.execute('x-emit');
  await b.execute('query-version');
  t.deepEqual(b.takeEvents().map((e) => e.event), ['X_TEST_EVENT']);
  t.deepEqual(await c.execute('qmp_capabilities'), { return: {} });
  await c.execute('query-version');
  t.deepEqual(c.transcript.filter((m) => 'event' in m), [], 'the event came while c was negotiating');
  await Promise.all([b.close(), c.close()]);
  await a.close();
  await layer.close();
});
