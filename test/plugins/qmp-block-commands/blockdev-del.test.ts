/**
 * blockdev-del of a backing file: QEMU's backing link blocks deleting the
 * node ("Node 'x' is busy: node is used as backing hd of 'y'"), naming the
 * image above by its device name if it had one when the link was made
 * (bdrv_backing_attach); a node reports its newest blocker. The recorded
 * conversations (commit and stream transcripts) check the same against
 * qemu-storage-daemon; devices, which it has none of, are checked here.
 */
import test, { type ExecutionContext } from 'ava';
import type { BlockLayerError } from '../../../core/errors.js';
import { type ChainSession, openChainSession } from '../../helpers/chain-session.js';
import { withPeerSession } from '../../helpers/peers.js';

const withSession = (t: ExecutionContext, body: (s: ChainSession) => Promise<void>): Promise<void> =>
  withPeerSession(t, () => openChainSession(), body);

async function del(t: ExecutionContext, s: ChainSession, node: string, message?: string): Promise<void> {
  const run = s.layer.execute('blockdev-del', { 'node-name': node });
  if (message === undefined) {
    await run;
    return;
  }
  const error = await t.throwsAsync<BlockLayerError>(run);
  t.is(error?.message, message);
}

test('a backing file cannot be deleted; the image above is named as it was when the link was made', (t) =>
  withSession(t, async (s) => {
    await s.chain('');
    // Opened by blockdev-add before any device: named by node name, also once top is a device.
    s.layer.graph.attachBackend('drive0', 'top');
    await del(t, s, 'mid', "Node 'mid' is busy: node is used as backing hd of 'top'");
    await del(t, s, 'base', "Node 'base' is busy: node is used as backing hd of 'mid'");
    // An intermediate commit links top to base on completion, while top is the device drive0.
    await s.layer.execute('block-commit', { device: 'drive0', 'top-node': 'mid', 'base-node': 'base' });
    await s.log.status('drive0', 'null');
    await del(t, s, 'base', "Node 'base' is busy: node is used as backing hd of 'drive0'");
    s.layer.graph.detachBackend('drive0');
    await del(t, s, 'top');
    // mid, out of the chain, still has base as its backing file.
    await del(t, s, 'base', "Node 'base' is busy: node is used as backing hd of 'mid'");
    await del(t, s, 'mid');
    await del(t, s, 'base');
  }));

test('a job that holds a backing file is its newest blocker; once the link is gone the node can go', (t) =>
  withSession(t, async (s) => {
    await s.chain('');
    await s.layer.execute('block-stream', { 'job-id': 'st', device: 'top', speed: 1 });
    await del(t, s, 'mid', "Node 'mid' is busy: block device is in use by block job: stream");
    await s.layer.execute('block-job-set-speed', { device: 'st', speed: 0 });
    await s.log.status('st', 'null');
    t.is(s.layer.graph.node('top')!.children.get('backing'), undefined, 'a full stream drops the backing file');
    await del(t, s, 'base', "Node 'base' is busy: node is used as backing hd of 'mid'");
    await del(t, s, 'mid');
    await del(t, s, 'base');
  }));
