/**
 * block-set-write-threshold against qemu-storage-daemon 7.2, QEMU being the
 * oracle: the same command line (a raw node over a file, both with
 * discard=unmap, exported writable over NBD) and the same steps on both
 * daemons; qemu-io writes, writes zeroes and discards through the export. Every reply, every
 * BLOCK_WRITE_THRESHOLD event (without its timestamp) and the
 * write_threshold query-named-block-nodes shows must be QEMU's.
 */
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { QmpClient, type QmpMessage } from '../../../core/qmp/qmp-client.js';
import { type RunningDaemon, startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const run = promisify(execFile);

type Step = { qmp: string; arguments?: Record<string, unknown> } | { io: string[] };

const threshold = (node: string, bytes: number): Step => ({ qmp: 'block-set-write-threshold', arguments: { 'node-name': node, 'write-threshold': bytes } });
const nodes: Step = { qmp: 'query-named-block-nodes', arguments: { flat: true } };

const KiB = 1024;
const MiB = 1024 * KiB;

const steps: Step[] = [
  nodes,
  threshold('nonode', MiB),
  threshold('f0', 'x' as unknown as number),
  threshold('f0', MiB),
  nodes,
  // Below the threshold, then a write ending 4 KiB past it (reported, and the threshold cleared), then one past it again (not).
  { io: ['write 512k 4k', 'write 1020k 8k', 'write 2M 4k'] },
  nodes,
  // Write-zeroes and discard count too; the threshold on the format node sees the guest's offsets.
  threshold('disk0', 3 * MiB),
  { io: ['write -z 3068k 8k'] },
  threshold('f0', 5 * MiB),
  { io: ['discard 5M 64k'] },
  threshold('f0', 6 * MiB),
  threshold('f0', 0),
  { io: ['write 7M 4k'] },
  nodes,
];

/** The replies (write_threshold per node for the queries) and the events, in order. */
async function converse(daemon: RunningDaemon, nbdSocket: string): Promise<unknown[]> {
  const client = await QmpClient.connect(daemon.socket, { negotiate: true });
  const seen: unknown[] = [];
  for (const step of steps) {
    if ('io' in step) {
      await run('qemu-io', ['-f', 'raw', ...step.io.flatMap((c) => ['-c', c]), `nbd+unix:///disk0?socket=${nbdSocket}`]);
      // Events reach the monitor before the export answers the request that caused them.
      await client.execute('query-version');
      seen.push(client.takeEvents().filter((e) => e.event === 'BLOCK_WRITE_THRESHOLD').map((e) => ({ event: e.event, data: e.data })));
      continue;
    }
    const reply: QmpMessage = await client.execute(step.qmp, step.arguments);
    if (step.qmp === 'query-named-block-nodes' && 'return' in reply) {
      seen.push((reply.return as { 'node-name': string; write_threshold: number }[]).map((n) => [n['node-name'], n.write_threshold]).sort());
    } else {
      seen.push(reply);
    }
  }
  await client.close();
  return seen;
}

test('block-set-write-threshold and BLOCK_WRITE_THRESHOLD as qemu-storage-daemon has them', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon') || !requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'blocklayer-threshold-');
  const results: unknown[][] = [];
  for (const kind of ['qemu', 'ours'] as const) {
    const image = join(dir, `${kind}.raw`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', image, '16M']);
    const nbd = join(dir, `${kind}-nbd.sock`);
    const daemon = await startDaemon(kind, [
      '--blockdev', `driver=file,node-name=f0,filename=${image},discard=unmap`,
      '--blockdev', 'driver=raw,node-name=disk0,file=f0,discard=unmap',
      '--nbd-server', `addr.type=unix,addr.path=${nbd}`,
      '--export', 'nbd,id=e0,node-name=disk0,writable=on',
    ]);
    t.teardown(() => daemon.stop());
    results.push(await converse(daemon, nbd));
  }
  const [expected, actual] = results as [unknown[], unknown[]];
  for (const [i, step] of steps.entries()) t.deepEqual(actual[i], expected[i], JSON.stringify(step));
  t.deepEqual(expected[5], [{ event: 'BLOCK_WRITE_THRESHOLD', data: { 'node-name': 'f0', 'amount-exceeded': 4096, 'write-threshold': MiB } }], 'the case is the one meant');
});
