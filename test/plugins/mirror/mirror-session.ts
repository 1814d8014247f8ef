/**
 * Set-up shared by the mirror tests: a layer in this process with the file,
 * raw and qcow2 drivers, the job commands, the mirror plugin and the
 * x-inject-error test filter; images made with qemu-img (data written by
 * qemu-io) and added with blockdev-add; the layer's events, with waits; and
 * "exports": users of a node the way an NBD export is one (a parent outside
 * the graph whose requests drains hold and whose edge a pivot moves), with
 * `query-block-exports` answering for them as QEMU does. Guest writes go
 * through an export's edge or a device (a named backend, as QEMU's -drive).
 * A QMP client on a unix socket replays QEMU's transcripts against the same
 * layer.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { ContainerModule } from 'inversify';
import type { BlockGraph } from '../../../core/block/block-graph.js';
import type { NodeEdge, NodeParent } from '../../../core/block/node-edge.js';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { BlockLayerEvent } from '../../../core/hooks/block-layer-hooks.js';
import type { Plugin } from '../../../core/plugin/plugin.js';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import type { QmpCommand } from '../../../core/qmp/qmp-command.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';
import injectErrorPlugin from '../../fixtures/error-filter/index.js';
export { havePeers } from '../../helpers/peers.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** 5 MiB of data in whole MiB, the rest unallocated (as the transcripts' sources: actual size 5 MiB). */
export const SOURCE_DATA = ['write -P 0x11 0 1M', 'write -P 0x22 2M 2M', 'write -P 0x33 8M 2M'];

/** A user of a node standing in for an NBD export (QEMU's export holds a BlockBackend). */
export class StandInExport implements NodeParent {
  readonly parentKind = 'export';
  readonly edge: NodeEdge;

  constructor(
    readonly id: string,
    graph: BlockGraph,
    node: string,
  ) {
    this.edge = graph.attach(this, graph.lookup(node), 'root');
  }

  get parentName(): string {
    return this.id;
  }

  /** The node the export's I/O reaches now. */
  get nodeName(): string {
    return this.edge.node.nodeName;
  }
}

function standInExportsPlugin(exports: Map<string, StandInExport>): Plugin {
  const command: QmpCommand = {
    name: 'query-block-exports',
    summary: 'The stand-in exports, as QEMU lists its NBD exports',
    execute: () => [...exports.values()].map((e) => ({ 'node-name': e.nodeName, 'shutting-down': false, type: 'nbd', id: e.id })),
  };
  return {
    name: 'stand-in-exports',
    version: '1.0.0',
    apiVersion: '1.0.0',
    module: new ContainerModule(({ bind }) => {
      bind(TOKENS.CommandContribution).toConstantValue([command]);
    }),
  };
}

export type ImageSpec =
  /** raw over a file `<name>.raw`, 16 MiB unless `size` says otherwise; `data`: qemu-io writes. */
  | { kind: 'raw'; name: string; size?: string | number; data?: readonly string[] }
  /** x-inject-error (first data write or read fails) over raw over a file `<name>.raw`. */
  | { kind: 'inject'; name: string; size?: string | number; event: 'read' | 'write'; errno: 'EIO' | 'ENOSPC'; once?: boolean; data?: readonly string[] };

export class EventLog {
  readonly events: BlockLayerEvent[] = [];
  private waiters: (() => void)[] = [];

  constructor(layer: BlockLayer) {
    layer.hooks.event.tap('mirror-test', (event) => {
      this.events.push(event);
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  /** Events about job `id`, as `status` names and event names (JOB_STATUS_CHANGE shown as its status). */
  of(id: string): string[] {
    return this.events
      .filter((e) => e.data?.id === id || e.data?.device === id)
      .map((e) => (e.event === 'JOB_STATUS_CHANGE' ? String(e.data!.status) : e.event));
  }

  /** The first event named `name` about job `id` (seen before or after the call). */
  async wait(name: string, id: string, timeoutMs = 20_000): Promise<BlockLayerEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find((e) => e.event === name && (e.data?.id === id || e.data?.device === id));
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`no ${name} for ${id} within ${timeoutMs} ms; events: ${this.of(id).join(', ')}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  /** Waits for the job's `status` (JOB_STATUS_CHANGE). */
  status(id: string, status: string, timeoutMs?: number): Promise<BlockLayerEvent> {
    return this.waitFor((e) => e.event === 'JOB_STATUS_CHANGE' && e.data?.id === id && e.data.status === status, `${id} ${status}`, timeoutMs);
  }

  async waitFor(match: (e: BlockLayerEvent) => boolean, what: string, timeoutMs = 20_000): Promise<BlockLayerEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(match);
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`no event ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  clear(): void {
    this.events.length = 0;
  }
}

export interface MirrorSession {
  layer: BlockLayer;
  dir: string;
  log: EventLog;
  exports: Map<string, StandInExport>;
  image(name: string, ext?: string): string;
  /** Makes an image file and opens it as a node (blockdev-add). */
  add(spec: ImageSpec): Promise<void>;
  /** A stand-in export `id` of node `node`. */
  exportNode(id: string, node: string): StandInExport;
  /** A QMP client on this layer (connected on first use). */
  client(): Promise<QmpClient>;
  close(): Promise<void>;
}

export async function openSession(images: readonly ImageSpec[] = []): Promise<MirrorSession> {
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-mirror-'));
  const exports = new Map<string, StandInExport>();
  const layer = await createTestLayer({
    plugins: ['file', 'raw', 'qcow2', 'qmp-block-commands', 'job-commands', 'backup', 'mirror', injectErrorPlugin, standInExportsPlugin(exports)],
  });
  const log = new EventLog(layer);
  const image = (name: string, ext = 'raw'): string => join(dir, `${name}.${ext}`);
  let client: QmpClient | undefined;
  const session: MirrorSession = {
    layer,
    dir,
    log,
    exports,
    image,
    async add(spec) {
      const path = image(spec.name);
      execFileSync('qemu-img', ['create', '-q', '-f', 'raw', path, String(spec.size ?? '16M')]);
      if (spec.data !== undefined) {
        execFileSync('qemu-io', ['-f', 'raw', ...spec.data.flatMap((c) => ['-c', c]), path], { stdio: 'ignore' });
      }
      const raw = { driver: 'raw', file: { driver: 'file', filename: path } };
      await layer.execute(
        'blockdev-add',
        spec.kind === 'raw'
          ? { ...raw, 'node-name': spec.name }
          : { driver: 'x-inject-error', 'node-name': spec.name, image: raw, event: spec.event, errno: spec.errno, once: spec.once ?? true },
      );
    },
    exportNode(id, node) {
      const created = new StandInExport(id, layer.graph, node);
      exports.set(id, created);
      return created;
    },
    async client() {
      if (client === undefined) {
        const path = join(dir, 'qmp.sock');
        await layer.serveQmp({ type: 'unix', path });
        client = await QmpClient.connect(path, { negotiate: true });
      }
      return client;
    },
    async close() {
      await client?.close().catch(() => undefined);
      await layer.lifecycle.requestShutdown('test over');
      for (const e of exports.values()) layer.graph.detach(e.edge);
      await layer.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  for (const spec of images) await session.add(spec);
  return session;
}

/** `qemu-img compare` of two images (format `fa`, `fb`), which the layer may hold (-U); its first output line. */
export function compareImages(a: string, b: string, fa = 'raw', fb = 'raw'): string {
  try {
    return execFileSync('qemu-img', ['compare', '-U', '-f', fa, '-F', fb, a, b], { encoding: 'utf8' }).trim();
  } catch (error) {
    return `${(error as { stdout?: string }).stdout ?? ''}${(error as Error).message}`.trim();
  }
}

export function assertIdentical(t: ExecutionContext, a: string, b: string, fa = 'raw', fb = 'raw'): void {
  t.is(compareImages(a, b, fa, fb), 'Images are identical.', `qemu-img compare ${a} ${b}`);
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
