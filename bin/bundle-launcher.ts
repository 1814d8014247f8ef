/**
 * The bundled CLI's entry (build/bundle/blocklayer.js): runs the bundle,
 * blocklayer.cjs beside it, from V8's code cache when there is one. Most of
 * the CLI's start-up is V8 compiling the bundle, first its top level, then
 * each function the command calls; the cache holds the bytecode of all of
 * them, so a run that finds it compiles almost nothing (`info` of a small
 * image: 0.21 s without, 0.14 s with, bare `node -e 0` 0.07 s).
 *
 * The cache is written at the exit of a run that had none, with what that
 * run compiled (the build primes it with a conversion, which reaches most of
 * the code). Its name carries a hash of the bundle, so a rebuilt bundle never
 * meets an old cache; V8 itself refuses one made by another version or with
 * other flags, which is then written anew. Failing to write it (a read-only
 * install) costs nothing but the next run's speed.
 */
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';

const bundle = fileURLToPath(new URL('./blocklayer.cjs', import.meta.url));
const directory = dirname(bundle);
const source = readFileSync(bundle, 'utf8');
const cacheFile = join(directory, `blocklayer-${createHash('sha256').update(source).digest('hex').slice(0, 16)}.v8cache`);

let cachedData: Buffer | undefined;
try {
  cachedData = readFileSync(cacheFile);
} catch {
  cachedData = undefined;
}
// The CommonJS wrapper, on the first line so that line numbers stay the bundle's, and the import the bundle's
// plugin loader uses (core/plugin/import-module.ts): code run from a code cache cannot import() in Node 20.
const script = new Script(`(function (exports, require, module, __filename, __dirname, blocklayerImport) {${source.replace(/^#!.*/, '')}\n})`, {
  filename: bundle,
  ...(cachedData === undefined ? {} : { cachedData }),
});

if (cachedData === undefined || script.cachedDataRejected === true) {
  process.once('exit', () => {
    // Written aside and renamed: processes started together each write a whole file, and the last one wins.
    const partial = `${cacheFile}.${process.pid}`;
    try {
      writeFileSync(partial, script.createCachedData());
      renameSync(partial, cacheFile);
    } catch {
      rmSync(partial, { force: true });
    }
  });
}

const module = { exports: {} };
type Importer = (specifier: string) => Promise<unknown>;
const run = script.runInThisContext() as (exports: object, require: NodeJS.Require, module: object, filename: string, dirname: string, importer: Importer) => void;
run(module.exports, createRequire(bundle), module, bundle, directory, (specifier) => import(specifier));
