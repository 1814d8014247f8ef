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
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
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
const common = { bundle: true, platform: 'node', target: 'node20', logLevel: 'warning', write: false };

/**
 * Writes a file whole or not at all (aside, then renamed): a CLI started
 * while the build runs (`npm start` rebuilds in place, as the tests do beside
 * other tests running the CLI) reads the old file or the new one, never half
 * of one.
 */
function replaceFile(path, contents, mode = 0o644) {
  const partial = `${path}.${process.pid}.partial`;
  writeFileSync(partial, contents, { mode });
  chmodSync(partial, mode);
  renameSync(partial, path);
}

/** Runs esbuild and writes what it made with replaceFile; returns the outputs' contents by path. */
async function bundle(options, mode) {
  const { outputFiles } = await build({ ...common, ...options });
  for (const file of outputFiles) replaceFile(file.path, file.contents, file.path.endsWith('.map') ? 0o644 : mode);
  return new Map(outputFiles.map((file) => [file.path, file.contents]));
}

mkdirSync(bundleDir, { recursive: true });
for (const name of readdirSync(bundleDir).filter((n) => n.endsWith('.v8cache'))) {
  rmSync(join(bundleDir, name), { force: true });
}
const bundled = await bundle({
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
}, 0o755);
if (!importReplaced) throw new Error('bundle-cli: core/plugin/import-module.js was not bundled, so the bundle could not load plugins from disk');
// The launcher names the code cache by the bundle's hash, worked out here rather than on every run.
const bundleHash = createHash('sha256').update(bundled.get(resolve(bundleDir, 'blocklayer.cjs'))).digest('hex').slice(0, 16);
await bundle({
  entryPoints: [resolve(out, 'bin', 'bundle-launcher.js')],
  outfile: resolve(bundleDir, 'blocklayer.js'),
  format: 'cjs',
  define: { 'import.meta.url': 'blocklayerLauncherUrl', BLOCKLAYER_BUNDLE_HASH: JSON.stringify(bundleHash) },
  banner: { js: "#!/usr/bin/env node\nconst blocklayerLauncherUrl = require('node:url').pathToFileURL(__filename).href;" },
}, 0o755);
// CommonJS, as the launcher is built: the package around it is "type": "module".
replaceFile(resolve(bundleDir, 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`);

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
