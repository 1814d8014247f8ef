/**
 * Set-up shared by the stream and commit tests: a layer in this process
 * with the file, qcow2 and null drivers, the block and job commands, the
 * stream, commit and nbd-server plugins and the x-inject-error test
 * filter; qcow2 backing chains made with qemu-img and filled with qemu-io
 * exactly as test/fixtures/qemu-transcripts/record-stream-commit.py makes
 * them; a QMP client on the layer; the layer's events; and checks with
 * qemu-img (info, compare, check).
 *
 * QEMU's recordings injected errors with blkdebug under a qcow2 node
 * (`read_aio` / `write_aio`, once). Here a failing read is an
 * x-inject-error filter named like QEMU's node, over the qcow2 node
 * (`<name>-q`): reads of the chain pass through it; a failing write is an
 * x-inject-error filter under the qcow2 node, as its file, where the
 * node's first data write fails.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockLayer } from '../../core/block-layer.js';
import type { BlockLayerEvent } from '../../core/hooks/block-layer-hooks.js';
import { QmpClient, type QmpMessage } from '../../core/qmp/qmp-client.js';
import { createTestLayer } from '../../core/testing/index.js';
import injectErrorPlugin from '../fixtures/error-filter/index.js';
import type { TranscriptRequest } from './job-transcripts.js';
export { havePeers } from './peers.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** The data of the recordings' chains: base, mid, top. */
export const BASE = ['write -P 0x11 0 2M', 'write -P 0x14 8M 1M'];
export const MID = ['write -P 0x22 2M 2M', 'write -P 0x25 8M 512k'];
export const TOP = ['write -P 0x33 4M 2M'];

export class EventLog {
  readonly events: BlockLayerEvent[] = [];

  constructor(layer: BlockLayer) {
    layer.hooks.event.tap('chain-test', (event) => this.events.push(event));
  }

  /** Events about job `id`: JOB_STATUS_CHANGE shown as its status, others by name. */
  of(id: string): string[] {
    return this.events
      .filter((e) => e.data?.id === id || e.data?.device === id)
      .map((e) => (e.event === 'JOB_STATUS_CHANGE' ? String(e.data!.status) : e.event));
  }

  /** The data of the first `name` event about job `id`, waiting for it. */
  async wait(name: string, id: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find((e) => e.event === name && (e.data?.id === id || e.data?.device === id));
      if (found !== undefined) return found.data ?? {};
      if (Date.now() > deadline) throw new Error(`no ${name} for ${id} within ${timeoutMs} ms; events: ${this.of(id).join(', ')}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Waits for job `id` to reach `status`. */
  async status(id: string, status: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.events.some((e) => e.event === 'JOB_STATUS_CHANGE' && e.data?.id === id && e.data.status === status)) {
      if (Date.now() > deadline) throw new Error(`job ${id} did not reach ${status}; events: ${this.of(id).join(', ')}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}

export interface ChainSession {
  layer: BlockLayer;
  dir: string;
  log: EventLog;
  /** The path of `<name>.qcow2`. */
  path(name: string): string;
  /** qemu-img create (backed by `<backing>.qcow2`, format recorded) and qemu-io writes. */
  image(name: string, size?: string, backing?: string, writes?: readonly string[]): string;
  /** The images `<prefix>base` (size `baseSize`), `<prefix>mid`, `<prefix>top`, as the recordings make them. */
  chainImages(prefix: string, baseSize?: string): void;
  /** blockdev-add of `<name>.qcow2` as node `name`. */
  add(name: string, backing?: string, extra?: Record<string, unknown>): Promise<void>;
  /** images and nodes of a chain (blockdev-add base, mid, top). */
  chain(prefix: string, baseSize?: string): Promise<void>;
  /** A node whose first data read (event read) or first data write (event write) fails once, named `name`. */
  addFaulty(name: string, backing: string | undefined, event: 'read' | 'write', errno: 'EIO' | 'ENOSPC'): Promise<void>;
  /** A QMP client on this layer (connected on first use). */
  client(): Promise<QmpClient>;
  /** `$IMG` in a recorded request, made this session's directory. */
  rewrite(request: TranscriptRequest): TranscriptRequest;
  /** This session's directory in a reply, written `$IMG` as the recordings do. */
  withoutDir(reply: unknown): unknown;
  close(): Promise<void>;
}

/** `plugins`: built-in plugins to load besides the usual ones (e.g. 'quorum'). */
export async function openChainSession(plugins: readonly string[] = []): Promise<ChainSession> {
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-chain-'));
  const layer = await createTestLayer({
    plugins: ['file', 'raw', 'qcow2', 'null-co', 'qmp-block-commands', 'job-commands', 'stream', 'commit', 'nbd-server', injectErrorPlugin, ...plugins],
  });
  const log = new EventLog(layer);
  const path = (name: string): string => join(dir, `${name}.qcow2`);
  const fileOf = (name: string) => ({ driver: 'file', filename: path(name) });
  let client: QmpClient | undefined;
  const session: ChainSession = {
    layer,
    dir,
    log,
    path,
    image(name, size = '16M', backing, writes = []) {
      const args = ['create', '-q', '-f', 'qcow2'];
      if (backing !== undefined) args.push('-b', path(backing), '-F', 'qcow2');
      execFileSync('qemu-img', [...args, path(name), size]);
      if (writes.length > 0) execFileSync('qemu-io', ['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), path(name)], { stdio: 'ignore' });
      return path(name);
    },
    chainImages(prefix, baseSize = '16M') {
      session.image(`${prefix}base`, baseSize, undefined, baseSize === '16M' ? BASE : BASE.slice(0, 1));
      session.image(`${prefix}mid`, '16M', `${prefix}base`, MID);
      session.image(`${prefix}top`, '16M', `${prefix}mid`, TOP);
    },
    async add(name, backing, extra = {}) {
      const options: Record<string, unknown> = { driver: 'qcow2', 'node-name': name, file: fileOf(name), ...extra };
      if (backing !== undefined) options.backing = backing;
      await layer.execute('blockdev-add', options);
    },
    async chain(prefix, baseSize) {
      session.chainImages(prefix, baseSize);
      await session.add(`${prefix}base`);
      await session.add(`${prefix}mid`, `${prefix}base`);
      await session.add(`${prefix}top`, `${prefix}mid`);
    },
    async addFaulty(name, backing, event, errno) {
      const inject = { driver: 'x-inject-error', event, errno, once: true };
      if (event === 'read') {
        const image: Record<string, unknown> = { driver: 'qcow2', file: fileOf(name) };
        if (backing !== undefined) image.backing = backing;
        await layer.execute('blockdev-add', { ...inject, 'node-name': name, image: { ...image, 'node-name': `${name}-q` } });
      } else {
        await session.add(name, backing, { file: { ...inject, image: fileOf(name) } });
      }
    },
    async client() {
      if (client === undefined) {
        const socket = join(dir, 'qmp.sock');
        await layer.serveQmp({ type: 'unix', path: socket });
        client = await QmpClient.connect(socket, { negotiate: true });
      }
      return client;
    },
    rewrite(request) {
      return JSON.parse(JSON.stringify(request).replaceAll('$IMG', dir)) as TranscriptRequest;
    },
    withoutDir(reply) {
      return JSON.parse(JSON.stringify(reply).replaceAll(dir, '$IMG')) as unknown;
    },
    async close() {
      await client?.close().catch(() => undefined);
      await layer.lifecycle.requestShutdown('test over');
      await layer.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return session;
}

/** `qemu-img info --output=json` of an image (-U: our layer may still have it open). */
export function qemuImgInfo(path: string): Record<string, unknown> {
  return JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path], { encoding: 'utf8' })) as Record<string, unknown>;
}

/** qemu-img compare's first line (`Images are identical.` when they are). */
export function compareImages(a: string, b: string, fa = 'qcow2', fb = 'qcow2'): string {
  try {
    return execFileSync('qemu-img', ['compare', '-U', '-f', fa, '-F', fb, a, b], { encoding: 'utf8' }).trim();
  } catch (error) {
    return `${(error as { stdout?: string }).stdout ?? ''}${(error as Error).message}`.trim();
  }
}

/** qemu-img check's verdict: '' when clean, else its output. */
export function checkImage(path: string): string {
  try {
    execFileSync('qemu-img', ['check', '-U', '-f', 'qcow2', path], { encoding: 'utf8' });
    return '';
  } catch (error) {
    return `${(error as { stdout?: string }).stdout ?? ''}${(error as Error).message}`.trim();
  }
}

/** A raw copy of what an image (with its backing chain) reads as, made with qemu-img convert. */
export function flatten(source: string, target: string): string {
  execFileSync('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', source, target]);
  return target;
}

/** A query-named-block-nodes reply condensed as the recordings condense it: [node, drv, backing-file] of `names`. */
export function nodeSummary(reply: QmpMessage, names: readonly string[]): unknown[] {
  const nodes = reply.return as Record<string, unknown>[];
  return names.map((name) => {
    const node = nodes.find((n) => n['node-name'] === name);
    return node === undefined ? [name, null, null] : [name, node.drv, node.backing_file ?? null];
  });
}

/** The summary line of a recording: `(summary: node, drv, backing-file) [[…]]`. */
export function parseSummary(summary: string): unknown[][] {
  return JSON.parse(summary.slice(summary.indexOf('['))) as unknown[][];
}
