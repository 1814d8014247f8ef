/**
 * `--object` as qemu-storage-daemon takes it: keyval (implied key
 * qom-type) or JSON, added before the nodes that name it; errors prefixed
 * with the option. The texts are qemu-storage-daemon 7.2's (run with the
 * same arguments; the last test compares both daemons live).
 */
import { join } from 'node:path';
import test from 'ava';
import { QmpClient } from '../../core/qmp/qmp-client.js';
import { createTestLayer } from '../../core/testing/index.js';
import { addObjectsFromOptions } from '../../bin/daemon/object-options.js';
import { nbdFixture } from '../drivers/nbd/fixture.js';
import { startDaemon } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';
import { tempDir } from '../helpers/temp-dir.js';
import { pskDir } from '../helpers/tls-files.js';

test('--object values: keyval and JSON; QEMU\'s errors, prefixed with the option', async (t) => {
  const dir = await tempDir(t, 'blocklayer-object-');
  await pskDir(join(dir, 'psk'));
  const layer = await createTestLayer({ plugins: ['tls-creds'] });
  t.teardown(() => layer.close());
  await addObjectsFromOptions(layer, {
    object: [
      `tls-creds-psk,id=a,dir=${dir}/psk,endpoint=server,verify-peer=off`,
      `qom-type=tls-creds-psk,id=b,dir=${dir}/psk`,
      JSON.stringify({ 'qom-type': 'tls-creds-psk', id: 'c', dir: `${dir}/psk`, endpoint: 'client', username: 'qemu' }),
    ],
  });
  t.deepEqual(
    layer.objects.list().map((o) => [o.id, o.qomType, (o as { endpoint?: string }).endpoint, (o as { verifyPeer?: boolean }).verifyPeer]),
    [
      ['a', 'tls-creds-psk', 'server', false],
      ['b', 'tls-creds-psk', 'client', true],
      ['c', 'tls-creds-psk', 'client', true],
    ],
  );
  const refused: [string, string][] = [
    ['nope,id=x', "Parameter 'qom-type' does not accept value 'nope'"],
    [`tls-creds-psk,id=a,dir=${dir}/psk`, "attempt to add duplicate property 'a' to object (type 'container')"],
    ['tls-creds-psk,dir=/tmp', "Parameter 'id' is missing"],
    ['id=x', "Parameter 'qom-type' is missing"],
    ['tls-creds-psk,id=x,dir=/nonexistent', 'Unable to access credentials /nonexistent/keys.psk: No such file or directory'],
    [`tls-creds-psk,id=x,dir=${dir}/psk,bogus=1`, "Parameter 'bogus' is unexpected"],
    [`tls-creds-psk,id=x,dir=${dir}/psk,verify-peer=maybe`, "Parameter 'verify-peer' expects 'on' or 'off'"],
    ['{"qom-type":"tls-creds-psk","id":"x","dir":"/nonexistent"}', 'Unable to access credentials /nonexistent/keys.psk: No such file or directory'],
  ];
  for (const [text, message] of refused) {
    await t.throwsAsync(addObjectsFromOptions(layer, { object: [text] }), { message: `--object ${text}: ${message}` });
  }
});

test('the daemon and qemu-storage-daemon: --object, then an nbd --blockdev over TLS to nbdkit', async (t) => {
  if (!requirePeer(t, 'nbdkit') || !requirePeer(t, 'qemu-storage-daemon')) return;
  const f = await nbdFixture(t);
  await pskDir(f.path('psk'));
  const server = await f.nbdkit(['--tls=require', `--tls-psk=${f.path('psk')}/keys.psk`, 'memory', '16M']);
  const args = [
    '--object', `tls-creds-psk,id=tls0,dir=${f.path('psk')}`,
    '--blockdev', `nbd,node-name=n0,server.type=unix,server.path=${server.socket},tls-creds=tls0`,
  ];
  const sizes: Record<string, unknown> = {};
  for (const kind of ['qemu', 'ours'] as const) {
    const daemon = await startDaemon(kind, args);
    t.teardown(() => daemon.stop());
    const client = await QmpClient.connect(daemon.socket, { negotiate: true });
    const nodes = (await client.execute('query-named-block-nodes', { flat: true })) as { return: { 'node-name': string; image: { 'virtual-size': number } }[] };
    sizes[kind] = nodes.return.map((n) => [n['node-name'], n.image['virtual-size']]);
    await client.close();
    await daemon.stop();
  }
  t.deepEqual(sizes.ours, sizes.qemu);
  t.deepEqual(sizes.ours, [['n0', 16 * 1024 * 1024]]);
});
