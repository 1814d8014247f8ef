/**
 * The manifest shipped with the package: the built-in drivers and plugins.
 * Imported (not read) so the compiled build carries its own copy next to the
 * compiled plugins, and relative module paths resolve to whichever tree runs.
 */
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import manifest from '../../plugin-manifest.json' with { type: 'json' };
import { checkManifest, type ResolvedManifest } from './plugin-manifest.js';

export const DEFAULT_MANIFEST_PATH = fileURLToPath(new URL('../../plugin-manifest.json', import.meta.url));

export function defaultManifest(): ResolvedManifest {
  return checkManifest(manifest, DEFAULT_MANIFEST_PATH, dirname(DEFAULT_MANIFEST_PATH));
}
