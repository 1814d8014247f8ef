/**
 * The layer's NBD server (QEMU's blockdev-nbd.c and block/export): at most
 * one listener, the NBD exports by id and by name, and the clients. The
 * commands are thin wrappers around it; so is `--nbd-server`/`--export`.
 * Stopping the server (nbd-server-stop, quit, layer close) deletes every
 * export, each with its BLOCK_EXPORT_DELETED event once its clients are
 * disconnected, then closes the listener and the clients still
 * negotiating.
 */
import type net from 'node:net';
import { inject, injectable } from 'inversify';
import type { BitmapStore } from '../../core/bitmap/bitmap-store.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import { BlockLayerError } from '../../core/errors.js';
import type { EventPublisher } from '../../core/hooks/event-publisher.js';
import type { Lifecycle } from '../../core/lifecycle.js';
import type { ObjectRegistry } from '../../core/objects/object-registry.js';
import type { TlsCreds } from '../../core/objects/user-object.js';
import { TOKENS } from '../../core/tokens.js';
import { type ConnectionHost, NbdConnection } from './connection.js';
import { checkExportArguments } from './export-checks.js';
import { negotiate } from './handshake.js';
import { type ListenAddress, NbdListener } from './listener.js';
import { NbdExport } from './nbd-export.js';
import type { BlockExportArgs, RemoveMode } from './options.js';
import { resolveTlsCreds, startTls } from './tls.js';
import { transmit } from './transmission.js';

export interface ServerSettings {
  tlsCreds?: string | undefined;
  tlsAuthz?: string | undefined;
  maxConnections?: number | undefined;
}

@injectable()
export class NbdServer implements ConnectionHost {
  /** How long a client may take to negotiate (qemu ≥ 8.2's default handshake limit). */
  handshakeLimitMs = 10_000;
  private listener: NbdListener | undefined;
  private starting = false;
  private tls: TlsCreds | undefined;
  private readonly byId = new Map<string, NbdExport>();
  private readonly byName = new Map<string, NbdExport>();
  private readonly connections = new Set<NbdConnection>();
  /** Hard deletions still waiting for their clients to go. */
  private readonly finishing = new Set<Promise<void>>();

  constructor(
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.EventPublisher) private readonly events: EventPublisher,
    @inject(TOKENS.Lifecycle) lifecycle: Lifecycle,
    @inject(TOKENS.ObjectRegistry) private readonly objects: ObjectRegistry,
    @inject(TOKENS.BitmapStore) private readonly bitmaps: BitmapStore,
  ) {
    // quit deletes the exports before its reply (as qemu-storage-daemon); close stops whatever is left.
    lifecycle.hooks.beforeShutdown.tapPromise('nbd-server', () => this.shutdown());
    lifecycle.hooks.close.tapPromise('nbd-server', () => this.shutdown());
  }

  get running(): boolean {
    return this.listener !== undefined;
  }

  /** Where the server listens (with the port actually bound for TCP), if it runs. */
  get address(): (ListenAddress & { boundPort?: number }) | undefined {
    const listener = this.listener;
    if (listener === undefined) return undefined;
    const port = listener.port;
    return port === undefined ? listener.address : { ...listener.address, boundPort: port };
  }

  /** Clients connected now (negotiating, or using an export). */
  get clientCount(): number {
    return this.connections.size;
  }

  get tlsCreds(): TlsCreds | undefined {
    return this.tls;
  }

  /** nbd-server-start / --nbd-server. */
  async start(address: ListenAddress, settings: ServerSettings = {}): Promise<void> {
    if (this.listener !== undefined || this.starting) throw new BlockLayerError('NBD server already running');
    this.starting = true;
    try {
      const tls = settings.tlsCreds === undefined ? undefined : resolveTlsCreds(this.objects, settings.tlsCreds);
      if (settings.tlsAuthz !== undefined) {
        throw new BlockLayerError(`tls-authz is not supported (no authorization objects): '${settings.tlsAuthz}'`);
      }
      this.tls = tls;
      this.listener = await NbdListener.listen(address, settings.maxConnections ?? 0, (socket, release) => this.accept(socket, release));
    } catch (error) {
      this.tls = undefined;
      throw error;
    } finally {
      this.starting = false;
    }
  }

  /** nbd-server-stop. */
  async stop(): Promise<void> {
    if (this.listener === undefined) throw new BlockLayerError('NBD server not running');
    await this.shutdown();
  }

  /** block-export-add (type nbd) / --export: QEMU's checks in QEMU's order, then the export. */
  addExport(args: BlockExportArgs): NbdExport {
    const settings = checkExportArguments(args, {
      node: (name) => this.graph.node(name),
      idInUse: (id) => this.byId.has(id),
      nameInUse: (name) => this.byName.has(name),
      running: () => this.running,
      bitmaps: this.bitmaps,
    });
    const node = this.graph.node(args['node-name'])!;
    const exp = new NbdExport(settings, (parent) => this.graph.attach(parent, node, 'root'));
    this.byId.set(exp.id, exp);
    this.byName.set(exp.name, exp);
    return exp;
  }

  /**
   * block-export-del: `safe` refuses while clients use the export; `hard`
   * disconnects them. Without clients the export is gone (and the event
   * sent) before this returns; with clients, once they have gone, as QEMU.
   */
  async deleteExport(id: string, mode: RemoveMode = 'safe'): Promise<void> {
    const exp = this.byId.get(id);
    if (exp === undefined) throw new BlockLayerError(`Export '${id}' is not found`);
    if (exp.shuttingDown) throw new BlockLayerError(`Export '${id}' is already shutting down`);
    if (mode === 'safe' && exp.clientCount > 0) throw new BlockLayerError(`export '${id}' still in use`);
    const hadClients = exp.clientCount > 0;
    const done = this.remove(exp);
    if (!hadClients) await done;
  }

  /** Exports, newest first (query-block-exports' order). */
  listAll(): NbdExport[] {
    return [...this.byId.values()].reverse();
  }

  findExport(name: string): NbdExport | undefined {
    return this.byName.get(name);
  }

  listExports(): NbdExport[] {
    return [...this.byName.values()];
  }

  startTls(socket: net.Socket, creds: TlsCreds): Promise<net.Socket> {
    return startTls(socket, creds);
  }

  /**
   * Deletes every export, then stops listening and drops the clients still
   * negotiating. The events come in qemu-storage-daemon's order: exports
   * that had clients first (as their clients go), then the others, oldest
   * first.
   */
  private async shutdown(): Promise<void> {
    const exports = [...this.byId.values()].filter((exp) => !exp.shuttingDown);
    await Promise.all(exports.filter((exp) => exp.clientCount > 0).map((exp) => this.remove(exp)));
    for (const exp of exports) if (!exp.shuttingDown) await this.remove(exp);
    await Promise.all(this.finishing);
    const listener = this.listener;
    this.listener = undefined;
    this.tls = undefined;
    // net.Server's close waits for its connections: drop them while it does.
    const closed = listener?.close();
    await Promise.all([...this.connections].map((c) => c.close()));
    await closed;
  }

  /** Takes the export's name away at once; the id goes with the event, once its clients are gone. */
  private remove(exp: NbdExport): Promise<void> {
    this.byName.delete(exp.name);
    const done = (async () => {
      await exp.shutDown();
      exp.releaseBitmaps();
      await this.graph.release(exp.edge);
      this.byId.delete(exp.id);
      this.events.publish('BLOCK_EXPORT_DELETED', { id: exp.id });
    })();
    this.finishing.add(done);
    void done.finally(() => this.finishing.delete(done));
    return done;
  }

  private accept(socket: net.Socket, release: () => void): void {
    const connection = new NbdConnection(socket, this);
    this.connections.add(connection);
    void connection
      .run((c) => this.serveClient(c))
      .finally(() => {
        this.connections.delete(connection);
        release();
      });
  }

  /** Negotiation (within the handshake limit), then requests on the chosen export. */
  private async serveClient(c: NbdConnection): Promise<void> {
    const timer = setTimeout(() => c.destroy(), this.handshakeLimitMs);
    let negotiated;
    try {
      negotiated = await negotiate(c);
    } finally {
      clearTimeout(timer);
    }
    if (negotiated === undefined || !negotiated.export.addClient(c)) return;
    try {
      await transmit(c, negotiated);
    } finally {
      await c.drainRequests();
      negotiated.export.removeClient(c);
    }
  }
}
