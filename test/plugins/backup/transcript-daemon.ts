/**
 * Set-up shared by the backup transcript tests: raw images made with
 * qemu-img (the source filled by qemu-io), our daemon started from the
 * command line with a manifest that adds the `x-inject-error` filter, a
 * QMP client, and `qemu-img compare` for the data.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExecutionContext } from 'ava';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { ROOT, type RunningDaemon, startDaemon } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';

export const MiB = 1024 * 1024;
export const SIZE = 16 * MiB;
export const MANIFEST = join(ROOT, 'test/fixtures/manifests/with-error-filter.json');

/**
 * The source: 5 MiB of data in whole MiB (as in s1, whose source reports an
 * actual size of 5 MiB), the rest unallocated. Every data extent fills the
 * 1 MiB copies it falls in, so a copy that fails costs exactly 1 MiB of
 * progress (QEMU's 15728640 after a failed write).
 */
export const SOURCE_DATA = ['write -P 0x11 0 1M', 'write -P 0x22 2M 2M', 'write -P 0x33 8M 2M'];

export type NodeSpec =
  /** raw over a file `<name>.raw`, 16 MiB unless `size` says otherwise; `data`: qemu-io writes. */
  | { kind: 'raw'; name: string; size?: string; data?: readonly string[] }
  /** x-inject-error over raw over a file `<name>.raw`. */
  | { kind: 'inject'; name: string; event: 'read' | 'write'; errno: 'EIO' | 'ENOSPC'; data?: readonly string[] };

export interface Session {
  client: QmpClient;
  daemon: RunningDaemon;
  image(name: string): string;
}

/** True if qemu-img and qemu-io are there (else the test is skipped, or failed in CI). */
export function havePeers(t: ExecutionContext): boolean {
  return requirePeer(t, 'qemu-img') && requirePeer(t, 'qemu-io');
}

function blockdev(node: NodeSpec, path: string): Record<string, unknown> {
  const raw = { driver: 'raw', file: { driver: 'file', filename: path } };
  if (node.kind === 'raw') return { ...raw, 'node-name': node.name };
  return { driver: 'x-inject-error', 'node-name': node.name, image: raw, event: node.event, errno: node.errno };
}

/** Makes the images and starts our daemon with them as --blockdev nodes, connected. */
export async function openSession(nodes: readonly NodeSpec[]): Promise<Session & { close(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-backup-transcripts-'));
  const image = (name: string): string => join(dir, `${name}.raw`);
  let daemon: RunningDaemon | undefined;
  let client: QmpClient | undefined;
  const close = async (): Promise<void> => {
    await client?.close().catch(() => undefined);
    await daemon?.stop();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const args = ['--manifest', MANIFEST];
    for (const node of nodes) {
      execFileSync('qemu-img', ['create', '-q', '-f', 'raw', image(node.name), node.kind === 'raw' ? (node.size ?? '16M') : '16M']);
      if (node.data !== undefined) {
        execFileSync('qemu-io', ['-f', 'raw', ...node.data.flatMap((c) => ['-c', c]), image(node.name)], { stdio: 'ignore' });
      }
      args.push('--blockdev', JSON.stringify(blockdev(node, image(node.name))));
    }
    daemon = await startDaemon('ours', args);
    client = await QmpClient.connect(daemon.socket, { negotiate: true });
    return { client, daemon, image, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** A daemon for one test: started, handed to `body`, stopped. */
export async function withDaemon(nodes: readonly NodeSpec[], body: (session: Session) => Promise<void>): Promise<void> {
  const session = await openSession(nodes);
  try {
    await body(session);
  } finally {
    await session.close();
  }
}

/**
 * One daemon for the sections of a transcript, as QEMU's harness ran them
 * in one session (it saves starting a daemon per section). Started by the
 * first test that asks; `close` it in `test.after.always`.
 */
export class SharedSession {
  private session: ReturnType<typeof openSession> | undefined;

  constructor(private readonly nodes: readonly NodeSpec[]) {}

  async get(): Promise<Session> {
    if (this.session !== undefined) {
      const session = await this.session;
      await tidy(session.client);
      return session;
    }
    this.session = openSession(this.nodes);
    return this.session;
  }

  async close(): Promise<void> {
    const session = await this.session?.catch(() => undefined);
    await session?.close();
  }
}

/**
 * Ends the jobs an earlier section left behind (if it stopped half-way)
 * and drops every event so far, so the next section starts clean.
 */
async function tidy(client: QmpClient): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const jobs = (await client.execute('query-jobs')).return as { id: string; status: string }[];
    if (jobs.length === 0 || Date.now() > deadline) break;
    for (const job of jobs) {
      await client.execute(job.status === 'concluded' ? 'job-dismiss' : 'job-cancel', { id: job.id });
    }
    await sleep(20);
  }
  client.takeEvents();
}

/** `qemu-img compare -f raw -F raw a b` says the images are identical. */
export function assertIdentical(t: ExecutionContext, a: string, b: string): void {
  let output: string;
  try {
    output = execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, b], { encoding: 'utf8' });
  } catch (error) {
    output = `${(error as { stdout?: string }).stdout ?? ''}${(error as Error).message}`;
  }
  t.is(output.trim(), 'Images are identical.', `qemu-img compare ${a} ${b}`);
}
