/**
 * The plugin manifest: which plugins to load, in order. `module` is a path
 * relative to the manifest (a directory means its index) or a package name.
 *
 *   { "plugins": [ { "name": "raw", "module": "./drivers/raw", "enabled": true, "options": {} } ] }
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { BlockLayerError } from '../errors.js';
import { Qapi, type Static } from '../schema/qapi.js';
import { QapiValidator } from '../schema/qapi-validator.js';

export const PluginEntrySchema = Qapi.struct('PluginEntry', {
  name: Qapi.str({ description: 'the plugin name (must match the plugin)' }),
  module: Qapi.str({ description: 'a path relative to the manifest, or a package name' }),
  enabled: Qapi.optional(Qapi.bool({ description: 'load this plugin', default: true })),
  options: Qapi.optional(Qapi.any({ description: 'options handed to the plugin, checked against its schema' })),
});

export const PluginManifestSchema = Qapi.struct('PluginManifest', {
  $schema: Qapi.optional(Qapi.str()),
  plugins: Qapi.list(PluginEntrySchema),
});

export type PluginEntry = Static<typeof PluginEntrySchema>;
export type PluginManifest = Static<typeof PluginManifestSchema>;

/** A manifest with the directory its relative module paths start from. */
export interface ResolvedManifest {
  readonly manifest: PluginManifest;
  readonly baseDir: string;
  /** Where it came from, for messages. */
  readonly source: string;
}

export function checkManifest(value: unknown, source: string, baseDir: string): ResolvedManifest {
  let manifest: PluginManifest;
  try {
    manifest = new QapiValidator().validate(PluginManifestSchema, value);
  } catch (error) {
    throw new BlockLayerError(`Invalid plugin manifest ${source}: ${(error as Error).message}`);
  }
  const seen = new Set<string>();
  for (const entry of manifest.plugins) {
    if (seen.has(entry.name)) throw new BlockLayerError(`Invalid plugin manifest ${source}: plugin '${entry.name}' is listed twice`);
    seen.add(entry.name);
  }
  return { manifest, baseDir, source };
}

export async function readManifest(path: string): Promise<ResolvedManifest> {
  const file = resolve(path);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new BlockLayerError(`Cannot read plugin manifest ${file}: ${(error as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new BlockLayerError(`Invalid plugin manifest ${file}: ${(error as Error).message}`);
  }
  return checkManifest(value, file, dirname(file));
}
