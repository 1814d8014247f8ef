/**
 * A block layer: one DI container holding the core services and the loaded
 * plugins. What an embedding application holds; the daemon is one of them.
 *
 *   const layer = await BlockLayer.create({ manifest: './plugin-manifest.json' });
 *   await layer.execute('blockdev-add', { driver: 'memory', 'node-name': 'm', size: 1 << 20 });
 */
import { Container } from 'inversify';
import type { BlockGraph } from './block/block-graph.js';
import type { DriverRegistry } from './block/driver-registry.js';
import { coreModule } from './core-module.js';
import type { BlockLayerHooks } from './hooks/block-layer-hooks.js';
import type { EventPublisher } from './hooks/event-publisher.js';
import type { Lifecycle } from './lifecycle.js';
import type { ObjectRegistry } from './objects/object-registry.js';
import { defaultManifest } from './plugin/default-manifest.js';
import type { Plugin } from './plugin/plugin.js';
import { type LinkedPluginModules, PluginLoader, type LoadedPlugin } from './plugin/plugin-loader.js';
import { checkManifest, type PluginManifest, readManifest, type ResolvedManifest } from './plugin/plugin-manifest.js';
import type { CommandRegistry } from './qmp/command-registry.js';
import { type QmpAddress, QmpServer, type QmpServerOptions } from './qmp/qmp-server.js';
import { TOKENS } from './tokens.js';
import { QMP_VERSION } from './version.js';

/** A plugin passed in code, with its options. */
export interface InlinePlugin {
  plugin: Plugin;
  options?: unknown;
}

export interface BlockLayerOptions {
  /**
   * Which plugins to load: a manifest file, or a manifest object whose
   * relative module paths start at `baseDir` (default: the working
   * directory). Default: the package's own manifest, unless `plugins` is
   * given.
   */
  manifest?: string | PluginManifest;
  baseDir?: string;
  /** Plugin objects loaded after the manifest's. */
  plugins?: readonly (Plugin | InlinePlugin)[];
  /** Manifest modules the program already holds (a bundled build), used instead of importing them. */
  linkedModules?: LinkedPluginModules;
}

export class BlockLayer {
  private readonly servers: QmpServer[] = [];

  private constructor(
    readonly container: Container,
    /** The plugins loaded, in order. */
    readonly plugins: readonly LoadedPlugin[],
  ) {}

  static async create(options: BlockLayerOptions = {}): Promise<BlockLayer> {
    const container = new Container();
    const loader = new PluginLoader(container);
    loader.loadCore(coreModule);
    const manifest = await resolveManifest(options);
    if (manifest !== undefined) {
      for (const entry of manifest.manifest.plugins) await loader.loadEntry(entry, manifest.baseDir, options.linkedModules);
    }
    for (const item of options.plugins ?? []) {
      const inline = 'plugin' in item ? item : { plugin: item };
      await loader.loadPlugin(inline.plugin, inline.options);
    }
    loader.collect();
    container.bind(TOKENS.LoadedPlugins).toConstantValue(loader.loaded);
    // Made now, not on first use: it loads the persistent bitmaps of every node opened from here on.
    container.get(TOKENS.BitmapStore);
    return new BlockLayer(container, loader.loaded);
  }

  get hooks(): BlockLayerHooks {
    return this.container.get(TOKENS.BlockLayerHooks);
  }

  get graph(): BlockGraph {
    return this.container.get(TOKENS.BlockGraph);
  }

  get drivers(): DriverRegistry {
    return this.container.get(TOKENS.DriverRegistry);
  }

  get commands(): CommandRegistry {
    return this.container.get(TOKENS.CommandRegistry);
  }

  get lifecycle(): Lifecycle {
    return this.container.get(TOKENS.Lifecycle);
  }

  /** Runs a command exactly as a QMP client would (same validation, same errors). */
  execute<R = unknown>(command: string, args: Record<string, unknown> = {}): Promise<R> {
    return this.commands.execute(command, args) as Promise<R>;
  }

  /** Publishes a QMP event to every negotiated client and to `hooks.event` taps. */
  emitEvent(event: string, data?: Record<string, unknown>): void {
    this.container.get<EventPublisher>(TOKENS.EventPublisher).publish(event, data);
  }

  /** A QMP server for this layer, closed with it; `listen` or `serveStreams` to use it. */
  createQmpServer(options: Partial<QmpServerOptions> = {}): QmpServer {
    const server = new QmpServer(this.commands, this.hooks, QMP_VERSION, options);
    this.servers.push(server);
    return server;
  }

  /** Serves QMP on `address`; resolves with the bound address (TCP port 0 picks one). */
  async serveQmp(address: QmpAddress): Promise<{ server: QmpServer; address: QmpAddress }> {
    const server = this.createQmpServer();
    return { server, address: await server.listen(address) };
  }

  get objects(): ObjectRegistry {
    return this.container.get(TOKENS.ObjectRegistry);
  }

  /** Stops serving, closes every node, then deletes every object. */
  async close(): Promise<void> {
    await Promise.all(this.servers.splice(0).map((s) => s.close()));
    await this.lifecycle.hooks.close.promise();
    await this.graph.closeAll();
    await this.objects.closeAll();
  }
}

async function resolveManifest(options: BlockLayerOptions): Promise<ResolvedManifest | undefined> {
  if (typeof options.manifest === 'string') return readManifest(options.manifest);
  if (options.manifest !== undefined) {
    const baseDir = options.baseDir ?? process.cwd();
    return checkManifest(options.manifest, 'given in code', baseDir);
  }
  return options.plugins === undefined ? defaultManifest() : undefined;
}
