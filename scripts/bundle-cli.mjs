#!/usr/bin/env node
/**
 * Bundles the compiled CLI (BUILD/bin/blocklayer.js, from tsc) and what it
 * imports, the built-in plugins included (bin/linked-plugins.ts), into one
 * CommonJS file, BUILD/bundle/blocklayer.cjs: Node then loads one module
 * instead of some 250, and V8 can cache its compiled code, which an ES
 * module cannot have in Node 20. BUILD/bundle/blocklayer.js, the CLI's
 * entry, is bin/bundle-launcher.ts, also as CommonJS: it runs the bundle
 * from that cache, which it names by the bundle's hash.
 * The files sit two levels down, as the compiled modules that locate files
 * by import.meta.url do. Then the cache is primed: a conversion of a small
 * image, so that it holds the code the image tools run.
 *
 *   node scripts/bundle-cli.mjs [BUILD]      (default: build)
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';

const out = resolve(process.argv[2] ?? 'build');
const bundleDir = resolve(out, 'bundle');
/** Plugins on disk are imported by the launcher (bin/bundle-launcher.ts), which hands its import to the bundle. */
let importReplaced = false;
const launcherImport = {
  name: 'launcher-import',
  setup(build) {
    build.onLoad({ filter: /[\\/]core[\\/]plugin[\\/]import-module\.js$/ }, () => {
      importReplaced = true;
      return { contents: 'export function importModule(specifier) { return blocklayerImport(specifier); }', loader: 'js' };
    });
  },
};
const common = { bundle: true, platform: 'node', target: 'node20', logLevel: 'warning' };

mkdirSync(bundleDir, { recursive: true });
for (const name of readdirSync(bundleDir).filter((n) => n.endsWith('.v8cache'))) {
  rmSync(join(bundleDir, name));
}
await build({
  ...common,
  entryPoints: [resolve(out, 'bin', 'blocklayer.js')],
  outfile: resolve(bundleDir, 'blocklayer.cjs'),
  format: 'cjs',
  // Less to parse; names are kept as written (no identifier minification), with a map for traces.
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: 'linked',
  // The modules that find files next to themselves do it by import.meta.url: the bundle's own.
  define: { 'import.meta.url': 'blocklayerBundleUrl' },
  banner: { js: "const blocklayerBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [launcherImport],
});
if (!importReplaced) throw new Error('bundle-cli: core/plugin/import-module.js was not bundled, so the bundle could not load plugins from disk');
// The launcher names the code cache by the bundle's hash, worked out here rather than on every run.
const bundleHash = createHash('sha256').update(readFileSync(resolve(bundleDir, 'blocklayer.cjs'))).digest('hex').slice(0, 16);
await build({
  ...common,
  entryPoints: [resolve(out, 'bin', 'bundle-launcher.js')],
  outfile: resolve(bundleDir, 'blocklayer.js'),
  format: 'cjs',
  define: { 'import.meta.url': 'blocklayerLauncherUrl', BLOCKLAYER_BUNDLE_HASH: JSON.stringify(bundleHash) },
  banner: { js: "#!/usr/bin/env node\nconst blocklayerLauncherUrl = require('node:url').pathToFileURL(__filename).href;" },
});
// CommonJS, as the launcher is built: the package around it is "type": "module".
writeFileSync(resolve(bundleDir, 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`);
chmodSync(resolve(bundleDir, 'blocklayer.js'), 0o755);

const scratch = mkdtempSync(join(tmpdir(), 'blocklayer-prime-'));
try {
  const source = join(scratch, 'source.raw');
  const data = Buffer.alloc(4 << 20);
  data.fill(0xa5, 0, 1 << 20);
  writeFileSync(source, data);
  execFileSync(process.execPath, [join(bundleDir, 'blocklayer.js'), 'convert', '-f', 'raw', '-O', 'qcow2', source, join(scratch, 'target.qcow2')], { stdio: 'inherit' });
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
