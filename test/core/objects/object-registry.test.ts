/**
 * The object registry behind object-add/object-del, with a test object
 * type contributed by an inline plugin. Error texts are qemu-storage-daemon
 * 7.2's, recorded from its QMP monitor (object-add of tls-creds-psk).
 */
import test from 'ava';
import { ContainerModule } from 'inversify';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { ObjectTypeContribution } from '../../../core/objects/object-type-contribution.js';
import { isTlsCreds, type UserObject } from '../../../core/objects/user-object.js';
import type { Plugin } from '../../../core/plugin/plugin.js';
import { Qapi } from '../../../core/schema/qapi.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';
import { tempDir } from '../../helpers/temp-dir.js';
import { pskDir } from '../../helpers/tls-files.js';

interface Thing extends UserObject {
  readonly size: number;
  closed: boolean;
}

function thingPlugin(name: string, created: Thing[]): Plugin {
  const type: ObjectTypeContribution<{ id: string; size?: number; fail?: boolean }> = {
    qomType: 'test-thing',
    summary: 'a test object',
    schema: Qapi.struct('TestThingProperties', { size: Qapi.optional(Qapi.int()), fail: Qapi.optional(Qapi.bool()) }),
    async create(props) {
      await new Promise((resolve) => setImmediate(resolve));
      if (props.fail === true) throw new Error('Cannot make this thing');
      const thing: Thing = {
        id: props.id,
        qomType: 'test-thing',
        size: props.size ?? 0,
        closed: false,
        async close() {
          thing.closed = true;
        },
      };
      created.push(thing);
      return thing;
    },
  };
  return {
    name,
    version: '1.0.0',
    apiVersion: '1.0.0',
    module: new ContainerModule(({ bind }) => {
      bind(TOKENS.ObjectTypeContribution).toConstantValue(type);
    }),
  };
}

async function layerWithThings(t: { teardown(fn: () => Promise<void>): void }): Promise<{ layer: BlockLayer; created: Thing[] }> {
  const created: Thing[] = [];
  const layer = await createTestLayer({ plugins: [thingPlugin('things', created)] });
  t.teardown(() => layer.close());
  return { layer, created };
}

test('object-add creates an object from flat arguments; object-del closes and removes it', async (t) => {
  const { layer, created } = await layerWithThings(t);
  t.deepEqual(await layer.execute('object-add', { 'qom-type': 'test-thing', id: 'th0', size: 42 }), {});
  const thing = layer.objects.get('th0') as Thing;
  t.like(thing, { id: 'th0', qomType: 'test-thing', size: 42 });
  t.deepEqual(layer.objects.list().map((o) => o.id), ['th0']);
  t.deepEqual(await layer.execute('object-del', { id: 'th0' }), {});
  t.true(created[0]!.closed);
  t.is(layer.objects.get('th0'), undefined);
});

test('object-add and object-del refuse what qemu-storage-daemon 7.2 refuses, with its texts', async (t) => {
  const { layer } = await layerWithThings(t);
  await layer.execute('object-add', { 'qom-type': 'test-thing', id: 'th0' });
  const refused: [Record<string, unknown>, string][] = [
    [{ 'qom-type': 'test-thing', id: 'th0' }, "attempt to add duplicate property 'th0' to object (type 'container')"],
    [{ 'qom-type': 'nope', id: 'x' }, "Parameter 'qom-type' does not accept value 'nope'"],
    [{ id: 'x' }, "Parameter 'qom-type' is missing"],
    [{ 'qom-type': 'test-thing' }, "Parameter 'id' is missing"],
    [{ 'qom-type': 'test-thing', id: 'x', extra: 1 }, "Parameter 'extra' is unexpected"],
    [{ 'qom-type': 'test-thing', id: 'bad id!' }, "Parameter 'id' expects an identifier"],
    [{ 'qom-type': 'test-thing', id: '0abc' }, "Parameter 'id' expects an identifier"],
  ];
  for (const [args, message] of refused) await t.throwsAsync(layer.execute('object-add', args), { message }, JSON.stringify(args));
  await t.throwsAsync(layer.execute('object-del', { id: 'nope' }), { message: "object 'nope' not found" });
  await layer.execute('object-del', { id: 'th0' });
  await t.throwsAsync(layer.execute('object-del', { id: 'th0' }), { message: "object 'th0' not found" });
});

test('the registry API checks like object-add; an unknown type is QEMU\'s "invalid object type"', async (t) => {
  const { layer } = await layerWithThings(t);
  await t.throwsAsync(layer.objects.add('nope', { id: 'x' }), { message: 'invalid object type: nope' });
  await t.throwsAsync(layer.objects.add('test-thing', { id: 'x', size: 'big' }), { message: "Invalid parameter type for 'size', expected: integer" });
  t.like(await layer.objects.add('test-thing', { id: 'x.y_z-1', size: 1 }), { id: 'x.y_z-1' });
});

test('a failing create adds nothing; two concurrent adds of one id: the second fails at once', async (t) => {
  const { layer } = await layerWithThings(t);
  await t.throwsAsync(layer.execute('object-add', { 'qom-type': 'test-thing', id: 'f', fail: true }), { message: 'Cannot make this thing' });
  t.is(layer.objects.get('f'), undefined);
  const first = layer.execute('object-add', { 'qom-type': 'test-thing', id: 'c' });
  await t.throwsAsync(layer.execute('object-add', { 'qom-type': 'test-thing', id: 'c' }), { message: /duplicate property 'c'/ });
  await first;
  t.truthy(layer.objects.get('c'));
});

test('closing the layer deletes (closes) every object', async (t) => {
  const created: Thing[] = [];
  const layer = await createTestLayer({ plugins: [thingPlugin('things', created)] });
  await layer.execute('object-add', { 'qom-type': 'test-thing', id: 'a' });
  await layer.execute('object-add', { 'qom-type': 'test-thing', id: 'b' });
  await layer.close();
  t.deepEqual(created.map((c) => c.closed), [true, true]);
  t.deepEqual(layer.objects.list(), []);
});

test('two plugins contributing one object type is a load error naming both', async (t) => {
  await t.throwsAsync(createTestLayer({ plugins: [thingPlugin('things', []), thingPlugin('more-things', [])] }), {
    message: "Plugin 'more-things' (inline): Plugin 'more-things' contributes object type 'test-thing', which plugin 'things' already contributes",
  });
});

test('object-add is introspectable: ObjectOptions is a union over the contributed types', async (t) => {
  const { layer } = await layerWithThings(t);
  const types = layer.objects.listTypes().map((type) => type.qomType);
  t.deepEqual(types, ['test-thing']);
  const commands = await layer.execute<{ name: string }[]>('query-commands');
  t.true(commands.some((c) => c.name === 'object-add') && commands.some((c) => c.name === 'object-del'));
});

test('tlsCreds() finds client or server credentials by id, with QEMU\'s errors (verified with qemu-img 7.2)', async (t) => {
  const { layer } = await layerWithThings(t);
  await layer.execute('object-add', { 'qom-type': 'test-thing', id: 'th0' });
  t.throws(() => layer.objects.tlsCreds('nope', 'client'), { message: "No TLS credentials with id 'nope'" });
  t.throws(() => layer.objects.tlsCreds('th0', 'client'), { message: "Object with id 'th0' is not TLS credentials" });
  t.false(isTlsCreds(layer.objects.get('th0')!));
});

test('tlsCreds() refuses credentials for the other side', async (t) => {
  const layer = await createTestLayer({ plugins: ['tls-creds'] });
  t.teardown(() => layer.close());
  const dir = await tempDir(t, 'blocklayer-objects-');
  await pskDir(dir);
  await layer.execute('object-add', { 'qom-type': 'tls-creds-psk', id: 's', dir, endpoint: 'server' });
  await layer.execute('object-add', { 'qom-type': 'tls-creds-psk', id: 'c', dir });
  t.throws(() => layer.objects.tlsCreds('s', 'client'), { message: 'Expected TLS credentials for a client endpoint' });
  t.throws(() => layer.objects.tlsCreds('c', 'server'), { message: 'Expected TLS credentials for a server endpoint' });
  t.is(layer.objects.tlsCreds('c', 'client').id, 'c');
});
