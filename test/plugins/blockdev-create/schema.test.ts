/**
 * blockdev-create's arguments in query-qmp-schema have QEMU 7.2's shape:
 * `job-id` and `options`, a union by `driver` with the file and qcow2
 * branches' members in QEMU's order, optional where QEMU's are, of the
 * same types (`encrypt`, refused here, is `any`).
 */
import test from 'ava';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';

type Info = Record<string, any>;

/** The type named `name`, with masked names resolved (nested structs as 'object'). */
function resolver(infos: Info[]) {
  const byName = new Map(infos.map((i) => [i.name as string, i]));
  const resolve = (name: string, depth = 0): unknown => {
    const info = byName.get(name)!;
    switch (info['meta-type']) {
      case 'builtin':
        return name;
      case 'enum':
        return { enum: info.values };
      case 'alternate':
        return { alternate: info.members.map((m: Info) => resolve(m.type, depth + 1)) };
      case 'object':
        if (depth > 0) return 'object';
        return info.members.map((m: Info) => ({ name: m.name, optional: 'default' in m, type: resolve(m.type, depth + 1) }));
      default:
        return info['meta-type'];
    }
  };
  return { byName, resolve };
}

function createArguments(infos: Info[]) {
  const { byName, resolve } = resolver(infos);
  const args = byName.get(byName.get('blockdev-create')!['arg-type'])!;
  const options = byName.get(args.members.find((m: Info) => m.name === 'options').type)!;
  const branch = (driver: string) => resolve(options.variants.find((v: Info) => v.case === driver).type) as Info[];
  return { top: args.members.map((m: Info) => m.name), tag: options.tag, branch };
}

test('blockdev-create: the arguments and the file and qcow2 options are QEMU 7.2s', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon')) return;
  const qemu = await startDaemon('qemu', []);
  t.teardown(() => qemu.stop());
  const client = await QmpClient.connect(qemu.socket, { negotiate: true });
  const theirs = createArguments((await client.execute('query-qmp-schema')).return as Info[]);
  await client.close();
  const layer = await createTestLayer({ plugins: ['file', 'raw', 'qcow2', 'job-commands', 'blockdev-create'] });
  t.teardown(() => layer.close());
  const ours = createArguments(await layer.execute<Info[]>('query-qmp-schema'));
  t.deepEqual(ours.top, theirs.top);
  t.is(ours.tag, theirs.tag);
  for (const driver of ['file', 'qcow2']) {
    const mine = ours.branch(driver).filter((m) => m.name !== 'driver');
    const qemus = theirs.branch(driver).filter((m) => m.name !== 'driver');
    t.true(qemus.length >= 5, `${driver}: QEMU's members were found`);
    t.deepEqual(
      mine.map((m) => m.name),
      qemus.map((m) => m.name),
      `${driver}: members, in QEMU's order`,
    );
    for (const [i, member] of mine.entries()) {
      const other = qemus[i]!;
      t.is(member.optional, other.optional, `${driver}.${member.name} optional`);
      if (member.name !== 'encrypt') t.deepEqual(member.type, other.type, `${driver}.${member.name} type`);
    }
  }
  t.deepEqual(ours.branch('raw').filter((m) => m.name !== 'driver'), [], 'raw: no blockdev-create options');
});
