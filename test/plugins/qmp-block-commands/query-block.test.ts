/**
 * query-block: one BlockInfo per device, `inserted` being what
 * query-named-block-nodes says of the node, with the filters jobs put in
 * without a name skipped (iotests 040 test_implicit_node, 041's
 * `inserted/file` after complete). qemu-storage-daemon has no devices (its
 * query-block is [], which block-resize.test.ts checks with exports), so
 * these run in-process, with devices attached as QEMU's -drive makes them.
 */
import test, { type ExecutionContext } from 'ava';
import { type ChainSession, MiB, openChainSession } from '../../helpers/chain-session.js';
import { withPeerSession } from '../../helpers/peers.js';

type Info = Record<string, any>;

const withSession = (t: ExecutionContext, body: (s: ChainSession) => Promise<void>): Promise<void> =>
  withPeerSession(t, () => openChainSession(['mirror', 'dirty-bitmap']), body);

const queryBlock = (s: ChainSession): Promise<Info[]> => s.layer.execute<Info[]>('query-block');

async function namedNode(s: ChainSession, name: string): Promise<Info> {
  return (await s.layer.execute<Info[]>('query-named-block-nodes')).find((n) => n['node-name'] === name)!;
}

test('no device, no BlockInfo; a device: QEMU\'s members for a backend without a guest device, the node as query-named-block-nodes shows it', (t) =>
  withSession(t, async (s) => {
    await s.chain('');
    t.deepEqual(await queryBlock(s), []);
    s.layer.graph.attachBackend('drive0', 'top');
    s.layer.graph.attachBackend('drive1', 'base');
    await s.layer.execute('block-dirty-bitmap-add', { node: 'top', name: 'b0' });
    const [drive0, drive1] = await queryBlock(s);
    t.deepEqual(drive0, { device: 'drive0', type: 'unknown', removable: true, locked: false, inserted: await namedNode(s, 'top') });
    t.like(drive0!.inserted, { 'node-name': 'top', backing_file_depth: 2, 'dirty-bitmaps': [{ name: 'b0', count: 0 }] });
    t.is(drive0!.inserted.image['backing-image']['backing-image'].filename, s.path('base'));
    t.deepEqual(drive1, { device: 'drive1', type: 'unknown', removable: true, locked: false, inserted: await namedNode(s, 'base') });
    s.layer.graph.detachBackend('drive1');
    t.deepEqual((await queryBlock(s)).map((d) => d.device), ['drive0']);
  }));

test('a mirror\'s implicit filter is skipped; a named one is what the device shows, over the chain', (t) =>
  withSession(t, async (s) => {
    await s.chain('');
    s.image('tgt', '16M');
    await s.add('tgt');
    s.layer.graph.attachBackend('drive0', 'top');
    await s.layer.execute('blockdev-mirror', { device: 'drive0', target: 'tgt', sync: 'full', speed: MiB });
    t.regex(s.layer.graph.backend('drive0')!.node.nodeName, /^#block\d+$/, 'the device is on the mirror filter');
    const [hidden] = await queryBlock(s);
    t.like(hidden!.inserted, { 'node-name': 'top', drv: 'qcow2', file: s.path('top'), backing_file_depth: 2 });
    await s.layer.execute('block-job-cancel', { device: 'drive0', force: true });
    await s.log.status('drive0', 'null');

    await s.layer.execute('blockdev-mirror', { 'job-id': 'j', device: 'drive0', target: 'tgt', sync: 'full', speed: MiB, 'filter-node-name': 'mf' });
    const [named] = await queryBlock(s);
    t.like(named!.inserted, { 'node-name': 'mf', drv: 'mirror_top', file: s.path('top'), backing_file_depth: 3 });
    t.like(named!.inserted.image, { format: 'mirror_top', 'backing-image': { filename: s.path('top'), format: 'qcow2' } });
    await s.layer.execute('block-job-cancel', { device: 'j', force: true });
    await s.log.status('j', 'null');
  }));

test('041 complete: query-block shows the target as the device\'s file', (t) =>
  withSession(t, async (s) => {
    s.image('src', '4M', undefined, ['write -P 0x5a 0 1M']);
    s.image('tgt', '4M');
    await s.add('src');
    await s.add('tgt');
    s.layer.graph.attachBackend('drive0', 'src');
    t.is((await queryBlock(s))[0]!.inserted.file, s.path('src'));
    await s.layer.execute('blockdev-mirror', { device: 'drive0', target: 'tgt', sync: 'full' });
    await s.log.wait('BLOCK_JOB_READY', 'drive0');
    await s.layer.execute('block-job-complete', { device: 'drive0' });
    await s.log.status('drive0', 'null');
    const [drive] = await queryBlock(s);
    t.like(drive!.inserted, { 'node-name': 'tgt', file: s.path('tgt') });
  }));
