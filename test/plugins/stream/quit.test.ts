/**
 * Quitting while stream and commit jobs run (iotest 185's stream, commit
 * and active commit cases): every job is cancelled (BLOCK_JOB_CANCELLED),
 * the filters leave the graph and the images are clean afterwards.
 */
import test from 'ava';
import { checkImage, havePeers, openChainSession } from '../../helpers/chain-session.js';

test('quit cancels running stream, intermediate commit and active commit jobs; images stay clean', async (t) => {
  if (!havePeers(t)) return;
  const s = await openChainSession();
  try {
    for (const prefix of ['s_', 'c_', 'a_']) await s.chain(prefix);
    await s.layer.execute('block-stream', { 'job-id': 'st', device: 's_top', speed: 65536 });
    await s.layer.execute('block-commit', { 'job-id': 'ci', device: 'c_top', 'top-node': 'c_mid', speed: 65536 });
    await s.layer.execute('block-commit', { 'job-id': 'ca', device: 'a_top' });
    await s.log.wait('BLOCK_JOB_READY', 'ca');
    await s.layer.lifecycle.requestShutdown('quit');
    for (const id of ['st', 'ci', 'ca']) {
      await s.log.status(id, 'null');
      t.true(s.log.of(id).includes('BLOCK_JOB_CANCELLED'), `${id} cancelled`);
    }
    t.false(s.layer.graph.list().some((n) => n.driver.kind === 'filter'), 'no filter left behind');
    t.is(s.layer.graph.node('s_top')!.children.get('backing')!.node.nodeName, 's_mid');
    t.is(s.layer.graph.node('c_top')!.children.get('backing')!.node.nodeName, 'c_mid');
    await s.layer.close();
    for (const name of ['s_top', 'c_top', 'c_base', 'a_top', 'a_base']) t.is(checkImage(s.path(name)), '', name);
  } finally {
    await s.close();
  }
});
