/**
 * Loads plugins into a layer's container, in manifest order: resolve and
 * import the module, check its default export and API version, validate its
 * options, load its ContainerModule, then collect what it contributed into
 * the registries, naming the plugin in every error. A plugin that fails to
 * load stops the layer from starting.
 */
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type Container, ContainerModule } from 'inversify';
import semver from 'semver';
import type { BlockDriverDefinition } from '../block/driver.js';
import type { DriverRegistry } from '../block/driver-registry.js';
import { BlockLayerError } from '../errors.js';
import type { BlockLayerHooks } from '../hooks/block-layer-hooks.js';
import type { HookContribution } from '../hooks/hook-contribution.js';
import type { JobTypeContribution } from '../job/job-type-contribution.js';
import type { JobTypeRegistry } from '../job/job-type-registry.js';
import type { ObjectRegistry } from '../objects/object-registry.js';
import type { ObjectTypeContribution } from '../objects/object-type-contribution.js';
import type { CommandRegistry } from '../qmp/command-registry.js';
import type { QmpCommand } from '../qmp/qmp-command.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';
import type { TransactionActionContribution } from '../transaction/transaction-action.js';
import type { TransactionActionRegistry } from '../transaction/transaction-action-registry.js';
import { PLUGIN_API_VERSION } from '../version.js';
import { importModule } from './import-module.js';
import { isPlugin, type Plugin } from './plugin.js';
import type { PluginEntry } from './plugin-manifest.js';

export interface LoadedPlugin {
  readonly name: string;
  readonly version: string;
  /** Where it was loaded from (the manifest's `module`, or 'inline'). */
  readonly source: string;
}

/**
 * Plugin modules that are already part of the program, by a manifest
 * entry's `module`: a bundled build carries its built-in plugins inside,
 * so they are not looked for on disk.
 */
export type LinkedPluginModules = ReadonlyMap<string, () => Promise<unknown>>;

export class PluginLoadError extends BlockLayerError {
  constructor(plugin: string, source: string, reason: string) {
    super(`Plugin '${plugin}' (${source}): ${reason}`);
    this.name = 'PluginLoadError';
  }
}

/** The tokens plugins contribute to; the loader collects what is bound to them. */
const CONTRIBUTION_TOKENS: readonly symbol[] = [
  TOKENS.BlockDriverContribution,
  TOKENS.CommandContribution,
  TOKENS.JobTypeContribution,
  TOKENS.TransactionActionContribution,
  TOKENS.HookContribution,
  TOKENS.ObjectTypeContribution,
];

export class PluginLoader {
  readonly loaded: LoadedPlugin[] = [];
  /** Everything that contributed, in load order ('core' first). */
  private readonly owners: { name: string; source: string }[] = [];
  private readonly ownTokens = new Map<string, symbol>();

  constructor(private readonly container: Container) {}

  /** Loads the core's own module; its contributions belong to 'core'. */
  loadCore(module: ContainerModule): void {
    this.container.load(this.attributed('core', module));
    this.owners.push({ name: 'core', source: 'core' });
  }

  /**
   * Loads one manifest entry; disabled entries are skipped. An entry whose
   * module is in `linked` is taken from there instead of from disk.
   */
  async loadEntry(entry: PluginEntry, baseDir: string, linked?: LinkedPluginModules): Promise<void> {
    if (entry.enabled === false) return;
    const plugin = await this.importPlugin(entry, baseDir, linked?.get(entry.module));
    if (plugin.name !== entry.name) {
      throw new PluginLoadError(entry.name, entry.module, `the module's plugin is named '${plugin.name}'`);
    }
    await this.loadPlugin(plugin, entry.options, entry.module);
  }

  /** Loads a plugin object (the test kit and embedding applications pass them directly). */
  async loadPlugin(plugin: Plugin, options: unknown, source = 'inline'): Promise<void> {
    const fail = (reason: string): never => {
      throw new PluginLoadError(plugin.name, source, reason);
    };
    if (this.owners.some((p) => p.name === plugin.name)) fail('a plugin of this name is already loaded');
    const range = semver.valid(plugin.apiVersion) ? `^${plugin.apiVersion}` : semver.validRange(plugin.apiVersion);
    if (range === null) fail(`apiVersion '${plugin.apiVersion}' is not a version or range`);
    if (!semver.satisfies(PLUGIN_API_VERSION, range!)) {
      fail(`written for plugin API ${plugin.apiVersion}, but this blocklayer provides ${PLUGIN_API_VERSION}`);
    }
    const validator = this.container.get<QapiValidator>(TOKENS.QapiValidator);
    let validOptions: unknown = options ?? {};
    if (plugin.options !== undefined) {
      try {
        validOptions = validator.validate(plugin.options, options ?? {}, 'options');
      } catch (error) {
        fail((error as Error).message);
      }
    } else if (options !== undefined && Object.keys(options as object).length > 0) {
      fail('takes no options');
    }
    this.container.bind(TOKENS.PluginOptions).toConstantValue(validOptions).whenNamed(plugin.name);
    try {
      await this.container.loadAsync(this.attributed(plugin.name, plugin.module));
    } catch (error) {
      fail((error as Error).message);
    }
    this.owners.push({ name: plugin.name, source });
    this.loaded.push({ name: plugin.name, version: plugin.version, source });
  }

  /**
   * Once every plugin is loaded: hands each one's contributions to the
   * registries, in load order, so a duplicate names the later plugin. Nothing
   * is resolved before all modules are in (a multi-binding resolved early
   * would not see later plugins' bindings the same way).
   */
  collect(): void {
    const drivers = this.container.get<DriverRegistry>(TOKENS.DriverRegistry);
    const commands = this.container.get<CommandRegistry>(TOKENS.CommandRegistry);
    const jobTypes = this.container.get<JobTypeRegistry>(TOKENS.JobTypeRegistry);
    const actions = this.container.get<TransactionActionRegistry>(TOKENS.TransactionActionRegistry);
    const hooks = this.container.get<BlockLayerHooks>(TOKENS.BlockLayerHooks);
    const objects = this.container.get<ObjectRegistry>(TOKENS.ObjectRegistry);
    for (const { name, source } of this.owners) {
      // A token the owner never named has no bindings: asking the container would only cost a plan.
      const own = <T>(token: symbol): T[] => {
        const ownToken = this.ownTokens.get(ownTokenKey(name, token));
        return ownToken === undefined ? [] : this.container.getAll<T>(ownToken);
      };
      try {
        for (const d of own<BlockDriverDefinition>(TOKENS.BlockDriverContribution)) drivers.register(d, name);
        for (const c of own<QmpCommand | QmpCommand[]>(TOKENS.CommandContribution).flat()) commands.register(c, name);
        for (const j of own<JobTypeContribution>(TOKENS.JobTypeContribution)) jobTypes.register(j, name);
        for (const a of own<TransactionActionContribution>(TOKENS.TransactionActionContribution)) actions.register(a, name);
        for (const o of own<ObjectTypeContribution>(TOKENS.ObjectTypeContribution)) objects.registerType(o, name);
        for (const h of own<HookContribution>(TOKENS.HookContribution)) h.apply(hooks);
      } catch (error) {
        throw new PluginLoadError(name, source, (error as Error).message);
      }
    }
  }

  /** The token `owner`'s bindings of a contribution token really go to. */
  private ownToken(owner: string, token: symbol): symbol {
    const key = ownTokenKey(owner, token);
    let own = this.ownTokens.get(key);
    if (own === undefined) {
      own = Symbol(`${token.description} of ${owner}`);
      this.ownTokens.set(key, own);
    }
    return own;
  }

  /** Wraps a module so that what it binds to a contribution token is recorded as `owner`'s. */
  private attributed(owner: string, module: ContainerModule): ContainerModule {
    const redirect = <I>(id: I): I =>
      typeof id === 'symbol' && CONTRIBUTION_TOKENS.includes(id) ? (this.ownToken(owner, id) as I) : id;
    return new ContainerModule((options) =>
      module.load({
        ...options,
        bind: (id) => options.bind(redirect(id)),
        isBound: (id, constraints) => options.isBound(redirect(id), constraints),
        rebind: (id) => options.rebind(redirect(id)),
        rebindAsync: (id) => options.rebindAsync(redirect(id)),
        unbind: (id) => options.unbind(redirect(id)),
        unbindAsync: (id) => options.unbindAsync(redirect(id)),
      }),
    );
  }

  private async importPlugin(entry: PluginEntry, baseDir: string, linked?: () => Promise<unknown>): Promise<Plugin> {
    const fail = (reason: string): never => {
      throw new PluginLoadError(entry.name, entry.module, reason);
    };
    let specifier = 'the linked module';
    let exports: { default?: unknown };
    try {
      if (linked === undefined) specifier = await resolveModule(entry.module, baseDir);
    } catch (error) {
      return fail((error as Error).message);
    }
    try {
      exports = (await (linked === undefined ? importModule(specifier) : linked())) as { default?: unknown };
    } catch (error) {
      return fail(`cannot load ${specifier}: ${(error as Error).message}`);
    }
    if (exports.default === undefined) fail('the module has no default export');
    if (!isPlugin(exports.default)) fail('the default export is not a plugin ({ name, version, apiVersion, module })');
    return exports.default as Plugin;
  }
}

function ownTokenKey(owner: string, token: symbol): string {
  return `${owner}\0${token.description}`;
}

/** A path (relative to `baseDir`; a directory means its index) or a package name, as an importable specifier. */
async function resolveModule(module: string, baseDir: string): Promise<string> {
  const isPath = module.startsWith('.') || module.startsWith('/');
  if (!isPath) {
    try {
      return pathToFileURL(createRequire(join(baseDir, 'manifest.js')).resolve(module)).href;
    } catch {
      return module;
    }
  }
  const path = resolve(baseDir, module);
  const kind = await stat(path).catch(() => undefined);
  const candidates = kind?.isDirectory()
    ? [join(path, 'index.js'), join(path, 'index.ts')]
    : [path, `${path}.js`, `${path}.ts`];
  for (const candidate of candidates) {
    if ((await stat(candidate).catch(() => undefined))?.isFile()) return pathToFileURL(candidate).href;
  }
  throw new Error(`module not found: ${path}`);
}
