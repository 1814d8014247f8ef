/**
 * blockdev-mirror's and drive-mirror's argument checks, their messages and
 * the order QEMU 7.2 makes them in (each pair below was sent to
 * qemu-storage-daemon 7.2 with both problems at once; the first message is
 * the one it answered), and nodes in use by a job: another job or
 * blockdev-del is refused with "Node 'x' is busy: block device is in use by
 * block job: …" (issue 6, point 4), the mirror's target, which QEMU's job
 * holds through a BlockBackend, with "Node x is in use".
 */
import test, { type ExecutionContext } from 'ava';
import type { BlockLayerError } from '../../../core/errors.js';
import { type MirrorSession, openSession, SOURCE_DATA } from './mirror-session.js';
import { withPeerSession } from '../../helpers/peers.js';

const withSession = (t: ExecutionContext, body: (s: MirrorSession) => Promise<void>): Promise<void> =>
  withPeerSession(t, () => openSession([
    { kind: 'raw', name: 'src', data: SOURCE_DATA },
    { kind: 'raw', name: 'm1' },
    { kind: 'raw', name: 'm2' },
    { kind: 'raw', name: 'm3' },
    { kind: 'raw', name: 'm4' },
  ]), body);

async function refused(t: ExecutionContext, s: MirrorSession, command: string, args: Record<string, unknown>, message: string): Promise<void> {
  const error = await t.throwsAsync<BlockLayerError>(s.layer.execute(command, args), undefined, `${command} ${JSON.stringify(args)}`);
  t.is(error?.message, message, `${command} ${JSON.stringify(args)}`);
  t.is(error?.errorClass, 'GenericError');
}

const mirror = { 'job-id': 'x', device: 'src', target: 'm1', sync: 'full' };

test.serial('QEMU\'s order: lookups, granularity, busy target, replaces, sync mode, buf-size, same node, filter name, job id, speed', (t) =>
  withSession(t, async (s) => {
    const cases: [Record<string, unknown>, string][] = [
      [{ device: 'nope', target: 'nope2', granularity: 3 }, "Cannot find device='nope' nor node-name='nope'"],
      [{ target: 'nope2', granularity: 3 }, "Cannot find device='nope2' nor node-name='nope2'"],
      [{ granularity: 1000, 'buf-size': -1 }, "Parameter 'granularity' expects a power of 2"],
      [{ granularity: 3, replaces: 'nope' }, "Parameter 'granularity' expects a value in range [512B, 64MB]"],
      [{ granularity: 134217728 }, "Parameter 'granularity' expects a value in range [512B, 64MB]"],
      [{ granularity: -1 }, "Parameter 'granularity' expects uint32_t"],
      [{ sync: 'incremental', replaces: 'nope' }, "Failed to find node with node-name='nope'"],
      [{ sync: 'incremental', 'buf-size': -1 }, "Sync mode 'incremental' not supported"],
      [{ sync: 'bitmap' }, "Sync mode 'bitmap' not supported"],
      [{ target: 'src', 'buf-size': -1 }, "Invalid parameter 'buf-size'"],
      [{ 'job-id': '1x', target: 'src' }, "Can't mirror node into itself"],
      [{ 'job-id': '1x', 'filter-node-name': 'm2' }, "Duplicate nodes with node-name='m2'"],
      [{ 'job-id': '1x', 'filter-node-name': '1bad' }, "Invalid node-name: '1bad'"],
      [{ 'job-id': '1x', speed: -1 }, "Invalid job ID '1x'"],
      [{ 'job-id': undefined }, "Invalid job ID ''"],
      [{ replaces: 'm2' }, "Cannot replace 'm2' by a node mirrored from 'src', because it cannot be guaranteed that doing so would not lead to an abrupt change of visible data"],
    ];
    for (const [args, message] of cases) {
      const request = { ...mirror, ...args };
      if (args['job-id'] === undefined && 'job-id' in args) delete (request as Record<string, unknown>)['job-id'];
      await refused(t, s, 'blockdev-mirror', request, message);
    }
    // Nothing was left behind: no job, no filter, no user of src but the test's.
    t.deepEqual(await s.layer.execute('query-jobs'), []);
    t.false(s.layer.graph.list().some((n) => n.driver.name === 'mirror_top'));
    t.is(s.layer.graph.node('src')!.parents.size, 0);
    // A negative speed is found once the job exists: it goes created → null (QEMU's job_early_fail).
    await refused(t, s, 'blockdev-mirror', { ...mirror, speed: -1 }, "Parameter 'speed' expects a non-negative value");
    t.deepEqual(s.log.of('x'), ['created', 'null']);
  }));

test.serial('drive-mirror: replaces needs node-name (before the image is made); unknown formats; missing directories and files', (t) =>
  withSession(t, async (s) => {
    const target = s.image('dm');
    await refused(t, s, 'drive-mirror', { ...mirror, target, granularity: 3, replaces: 'x' }, 'a node-name must be provided when replacing a named node of the graph');
    await refused(t, s, 'drive-mirror', { ...mirror, target, format: 'nope' }, "Unknown file format 'nope'");
    await refused(t, s, 'drive-mirror', { ...mirror, target, format: 'nope', mode: 'existing' }, "Unknown driver 'nope'");
    await refused(t, s, 'drive-mirror', { ...mirror, target: '/nonexist/x.raw', format: 'raw' }, "Could not create '/nonexist/x.raw': No such file or directory");
    await refused(t, s, 'drive-mirror', { ...mirror, target: '/nonexist/x.raw', format: 'raw', mode: 'existing' }, "Could not open '/nonexist/x.raw': No such file or directory");
    // QEMU creates the image before it looks at the granularity; the target it opened is closed again.
    await refused(t, s, 'drive-mirror', { ...mirror, target, sync: 'incremental', format: 'raw', granularity: 3 }, "Parameter 'granularity' expects a value in range [512B, 64MB]");
    t.false(s.layer.graph.list().some((n) => n.implicit && n.driver.name === 'raw'), 'the opened target was closed');
    await refused(t, s, 'drive-mirror', { ...mirror, target, sync: 'none', format: 'raw' }, "Backing file not supported for file format 'raw'");
  }));

test.serial('the device must be a root node: not a child, not a node a job holds', (t) =>
  withSession(t, async (s) => {
    const file = s.layer.graph.node('src')!.children.get('file')!.node.nodeName;
    await refused(t, s, 'blockdev-mirror', { ...mirror, device: file }, 'Need a root block node');
    await s.layer.execute('blockdev-mirror', { 'job-id': 'a', device: 'src', target: 'm1', sync: 'full', speed: 1 });
    await refused(t, s, 'blockdev-mirror', { 'job-id': 'b', device: 'src', target: 'm2', sync: 'full' }, 'Need a root block node');
    await refused(t, s, 'blockdev-mirror', { 'job-id': 'b', device: 'm1', target: 'm2', sync: 'full' }, 'Need a root block node');
    await refused(t, s, 'drive-mirror', { 'job-id': 'b', device: 'm1', target: s.image('dm'), sync: 'full' }, 'Need a root block node');
    await s.layer.execute('job-cancel', { id: 'a' });
  }));

test.serial('nodes a mirror holds: other jobs and blockdev-del are refused with QEMU\'s messages; the job id is taken', (t) =>
  withSession(t, async (s) => {
    await s.layer.execute('blockdev-mirror', { 'job-id': 'a', device: 'src', target: 'm1', sync: 'full', speed: 1, 'filter-node-name': 'mt' });
    const busy = (node: string): string => `Node '${node}' is busy: block device is in use by block job: mirror`;
    await refused(t, s, 'blockdev-mirror', { 'job-id': 'b', device: 'm2', target: 'm1', sync: 'full' }, busy('m1'));
    await refused(t, s, 'blockdev-mirror', { 'job-id': 'b', device: 'm2', target: 'm1', sync: 'incremental' }, busy('m1'));
    await refused(t, s, 'blockdev-backup', { 'job-id': 'b', device: 'src', target: 'm2', sync: 'full' }, busy('src'));
    await refused(t, s, 'blockdev-backup', { 'job-id': 'b', device: 'm2', target: 'm1', sync: 'full' }, busy('m1'));
    await refused(t, s, 'blockdev-backup', { 'job-id': 'b', device: 'm1', target: 'm2', sync: 'full' }, busy('m1'));
    await refused(t, s, 'blockdev-del', { 'node-name': 'src' }, busy('src'));
    await refused(t, s, 'blockdev-del', { 'node-name': 'mt' }, busy('mt'));
    await refused(t, s, 'blockdev-del', { 'node-name': 'm1' }, 'Node m1 is in use');
    await refused(t, s, 'blockdev-mirror', { 'job-id': 'a', device: 'm3', target: 'm4', sync: 'full' }, "Job ID 'a' already in use");
    await s.layer.execute('job-cancel', { id: 'a' });
    await s.log.status('a', 'null');
    // Once the job is gone, so are its claims.
    await s.layer.execute('blockdev-del', { 'node-name': 'm1' });
  }));

test.serial('a backup\'s nodes refuse a mirror: the same seam, the backup\'s blocker', (t) =>
  withSession(t, async (s) => {
    await s.layer.execute('blockdev-backup', { 'job-id': 'bk', device: 'm3', target: 'm4', sync: 'full', speed: 1 });
    await refused(t, s, 'blockdev-mirror', { 'job-id': 'b', device: 'm3', target: 'm2', sync: 'full' }, 'Need a root block node');
    await refused(t, s, 'blockdev-mirror', { 'job-id': 'b', device: 'm2', target: 'm4', sync: 'full' }, "Node 'm4' is busy: block device is in use by block job: backup");
    await refused(t, s, 'blockdev-del', { 'node-name': 'm4' }, "Node 'm4' is busy: block device is in use by block job: backup");
    await s.layer.execute('job-cancel', { id: 'bk' });
  }));

test.serial('a node with a device is named by its device in the busy message, as QEMU\'s bdrv_get_device_or_node_name', (t) =>
  withSession(t, async (s) => {
    s.layer.graph.attachBackend('drive1', 'm2');
    await s.layer.execute('blockdev-mirror', { 'job-id': 'a', device: 'src', target: 'm1', sync: 'full', speed: 1 });
    // m2 (device drive1) is free; a backup from it to m1 finds m1 busy.
    await refused(t, s, 'blockdev-backup', { 'job-id': 'b', device: 'drive1', target: 'm1', sync: 'full' }, "Node 'm1' is busy: block device is in use by block job: mirror");
    await s.layer.execute('job-cancel', { id: 'a' });
    await s.log.status('a', 'null');
    await s.layer.execute('blockdev-mirror', { 'job-id': 'c', device: 'drive1', target: 'm3', sync: 'full', speed: 1 });
    await refused(t, s, 'blockdev-mirror', { 'job-id': 'd', device: 'm4', target: 'drive1', sync: 'full' }, "Node 'drive1' is busy: block device is in use by block job: mirror");
    await s.layer.execute('job-cancel', { id: 'c' });
  }));
