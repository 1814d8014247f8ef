/**
 * query-qmp-schema is generated from the schemas that validate commands;
 * checked for consistency, and against qemu-storage-daemon 7.2's own
 * introspection for the commands and driver options both have.
 */
import test from 'ava';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';

type Info = Record<string, any>;

/** Resolves masked type names into nested structures, so two schemas compare by shape. */
function resolver(infos: Info[]) {
  const byName = new Map(infos.map((i) => [i.name as string, i]));
  const resolve = (name: string, depth = 0): unknown => {
    const info = byName.get(name);
    if (info === undefined) throw new Error(`type '${name}' is referenced but not defined`);
    if (depth > 6) return info['meta-type'];
    switch (info['meta-type']) {
      case 'builtin':
        return name;
      case 'enum':
        return { enum: info.values };
      case 'array':
        return { list: resolve(info['element-type'], depth + 1) };
      case 'alternate':
        return { alternate: info.members.map((m: Info) => resolve(m.type, depth + 1)) };
      case 'object':
        return {
          members: info.members.map((m: Info) => ({ name: m.name, optional: 'default' in m, type: resolve(m.type, depth + 1) })),
          ...(info.tag === undefined ? {} : { tag: info.tag }),
        };
      default:
        return info;
    }
  };
  return { byName, resolve };
}

/** A type with nested structs reduced to 'object'. */
function shallow(type: unknown): unknown {
  if (typeof type !== 'object' || type === null) return type;
  if ('members' in type) return 'object';
  if ('alternate' in type) return { alternate: (type as { alternate: unknown[] }).alternate.map(shallow) };
  return type;
}

async function ours(): Promise<Info[]> {
  const layer = await createTestLayer({ plugins: ['qmp-block-commands', 'raw', 'null-co', 'file'] });
  return layer.execute<Info[]>('query-qmp-schema');
}

test('every type our schema refers to is defined, and each command appears once', async (t) => {
  const infos = await ours();
  const { byName, resolve } = resolver(infos);
  const commands = infos.filter((i) => i['meta-type'] === 'command');
  t.is(new Set(commands.map((c) => c.name)).size, commands.length);
  for (const command of commands) {
    t.notThrows(() => resolve(command['arg-type']), command.name);
    t.notThrows(() => resolve(command['ret-type']), command.name);
  }
  t.deepEqual(byName.get('0'), { name: '0', members: [], 'meta-type': 'object' });
  const blockdevAdd = byName.get(byName.get('blockdev-add')!['arg-type']);
  t.is(blockdevAdd!.tag, 'driver');
  t.deepEqual(
    blockdevAdd!.variants.map((v: Info) => v.case).sort(),
    ['file', 'memory', 'null-co', 'raw'],
  );
});

test('commands and driver options have the shape qemu-storage-daemon 7.2 introspects', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon')) return;
  const qemuDaemon = await startDaemon('qemu', []);
  let theirs: Info[];
  try {
    const client = await QmpClient.connect(qemuDaemon.socket, { negotiate: true });
    theirs = (await client.execute('query-qmp-schema')).return as Info[];
    await client.close();
  } finally {
    await qemuDaemon.stop();
  }
  const mine = resolver(await ours());
  const qemu = resolver(theirs);
  for (const name of ['qmp_capabilities', 'query-version', 'query-commands', 'quit', 'blockdev-del', 'query-named-block-nodes']) {
    const a = mine.byName.get(name)!;
    const b = qemu.byName.get(name)!;
    t.deepEqual(mine.resolve(a['arg-type']), qemu.resolve(b['arg-type']), `${name} arguments`);
  }
  t.deepEqual(mine.resolve(mine.byName.get('query-version')!['ret-type']), qemu.resolve(qemu.byName.get('query-version')!['ret-type']));
  // BlockdevOptions: our base members are QEMU's, in QEMU's order;
  // each driver's members are a subset of QEMU's, with the same types.
  const addOurs = mine.byName.get(mine.byName.get('blockdev-add')!['arg-type'])!;
  const addQemu = qemu.byName.get(qemu.byName.get('blockdev-add')!['arg-type'])!;
  t.deepEqual(
    addOurs.members.map((m: Info) => m.name),
    addQemu.members.map((m: Info) => m.name),
  );
  for (const driver of ['file', 'raw', 'null-co']) {
    const variant = (info: Info, r: ReturnType<typeof resolver>) =>
      r.resolve(info.variants.find((v: Info) => v.case === driver).type) as { members: Info[] };
    const qemuMembers = new Map(variant(addQemu, qemu).members.map((m) => [m.name, m]));
    for (const member of variant(addOurs, mine).members) {
      const theirsMember = qemuMembers.get(member.name);
      t.truthy(theirsMember, `${driver}.${member.name} exists in QEMU`);
      if (theirsMember === undefined) continue;
      t.is(member.optional, theirsMember.optional, `${driver}.${member.name} optional`);
      // Enums may have fewer values here; a node reference's options (BlockdevOptions) are compared above.
      if (typeof member.type !== 'object' || !('enum' in (member.type as object))) {
        t.deepEqual(shallow(member.type), shallow(theirsMember.type), `${driver}.${member.name} type`);
      }
    }
  }
});
