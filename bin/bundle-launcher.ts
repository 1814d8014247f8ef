/**
 * The bundled CLI's entry (build/bundle/blocklayer.js): runs the bundle,
 * blocklayer.cjs beside it, from V8's code cache when there is one. Most of
 * the CLI's start-up is V8 compiling the bundle, first its top level, then
 * each function the command calls; the cache holds the bytecode of all of
 * them, so a run that finds it compiles almost nothing (`info` of a small
 * image: 0.15 s without, 0.08 s with, bare `node -e 0` 0.03 s).
 *
 * The cache is written at the exit of a run that had none, with what that
 * run compiled (the build primes it with a conversion, which reaches most of
 * the code). Its name carries a hash of the bundle, worked out by the build
 * (scripts/bundle-cli.mjs), which makes this launcher and the bundle
 * together, so a rebuilt bundle never meets an old cache; V8 itself refuses
 * one made by another version or with other flags, which is then written
 * anew. It lives beside the bundle, or,
 * where the user may not write there (an install owned by root), in the
 * user's cache directory ($XDG_CACHE_HOME or ~/.cache, then blocklayer/),
 * which keeps only the newest bundle's. Failing to write it anywhere costs
 * nothing but the next run's speed.
 *
 * The launcher is built as CommonJS (build/bundle/package.json says so), as
 * the bundle is: an ES module entry would start Node's ES module loader, and
 * hashing the bundle here would load node:crypto, 10-15 ms of every run.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';

const bundle = fileURLToPath(new URL('./blocklayer.cjs', import.meta.url));
const directory = dirname(bundle);
const source = readFileSync(bundle, 'utf8');
/** Defined by the build: the first 16 hex digits of the bundle's SHA-256. */
declare const BLOCKLAYER_BUNDLE_HASH: string;
const cacheName = `blocklayer-${BLOCKLAYER_BUNDLE_HASH}.v8cache`;
const userCache = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'blocklayer');
/** Where the cache may be, in the order it is looked for and written. */
const places = [directory, userCache];

let cachedData: Buffer | undefined;
let foundIn: string | undefined;
for (const place of places) {
  try {
    cachedData = readFileSync(join(place, cacheName));
    foundIn = place;
    break;
  } catch {
    cachedData = undefined;
  }
}

/** Writes the cache into `place`, whole or not at all; false if that is not possible there. */
function writeCache(place: string, data: Buffer): boolean {
  // Written aside and renamed: processes started together each write a whole file, and the last one wins.
  const partial = join(place, `${cacheName}.${process.pid}`);
  try {
    if (place === userCache) mkdirSync(place, { recursive: true });
    writeFileSync(partial, data);
    renameSync(partial, join(place, cacheName));
  } catch {
    rmSync(partial, { force: true });
    return false;
  }
  if (place === userCache) {
    try {
      for (const old of readdirSync(place)) if (old.endsWith('.v8cache') && old !== cacheName) rmSync(join(place, old), { force: true });
    } catch {
      // An older bundle's cache left behind costs only disk space.
    }
  }
  return true;
}
// The CommonJS wrapper, on the first line so that line numbers stay the bundle's, and the import the bundle's
// plugin loader uses (core/plugin/import-module.ts): code run from a code cache cannot import() in Node 20.
const script = new Script(`(function (exports, require, module, __filename, __dirname, blocklayerImport) {${source.replace(/^#!.*/, '')}\n})`, {
  filename: bundle,
  ...(cachedData === undefined ? {} : { cachedData }),
});

if (cachedData === undefined || script.cachedDataRejected === true) {
  process.once('exit', () => {
    const data = script.createCachedData();
    // A refused cache is replaced where it was found first.
    for (const place of foundIn === undefined ? places : [foundIn, ...places.filter((p) => p !== foundIn)]) {
      if (writeCache(place, data)) break;
    }
  });
}

const module = { exports: {} };
type Importer = (specifier: string) => Promise<unknown>;
const run = script.runInThisContext() as (exports: object, require: NodeJS.Require, module: object, filename: string, dirname: string, importer: Importer) => void;
run(module.exports, createRequire(bundle), module, bundle, directory, (specifier) => import(specifier));
