#!/usr/bin/env node
/**
 * Bundles the compiled CLI (BUILD/bin/blocklayer.js, from tsc) and what it
 * imports, the built-in plugins included (bin/linked-plugins.ts), into one
 * file, BUILD/bundle/blocklayer.js: Node then loads one module instead of
 * some 250, which is most of the CLI's start-up. The file sits two levels
 * down, as the compiled modules that locate files by import.meta.url do.
 *
 *   node scripts/bundle-cli.mjs [BUILD]      (default: build)
 */
import { resolve } from 'node:path';
import { build } from 'esbuild';

const out = resolve(process.argv[2] ?? 'build');
await build({
  entryPoints: [resolve(out, 'bin', 'blocklayer.js')],
  outfile: resolve(out, 'bundle', 'blocklayer.js'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Less to parse at start-up; names are kept as written (no identifier minification), with a map for traces.
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: 'linked',
  // CommonJS dependencies call require(); an ES module has none of its own.
  banner: { js: "import { createRequire as blocklayerRequire } from 'node:module'; const require = blocklayerRequire(import.meta.url);" },
  logLevel: 'warning',
});
