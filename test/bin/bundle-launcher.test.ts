/**
 * The built CLI's launcher (bin/bundle-launcher.ts) runs the bundle from
 * V8's code cache: the first run in a directory writes the cache, later runs
 * take it as it is, a damaged cache is replaced, where the bundle's
 * directory is not writable the cache goes to the user's cache directory,
 * and code run from the cache still imports plugins from disk. Needs `npm run build` (CI builds before
 * testing); the two built files are copied to a directory of their own.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { BLOCKLAYER_VERSION } from '../../core/version.js';
import { ROOT } from '../helpers/daemons.js';
import { tempDir } from '../helpers/temp-dir.js';

const run = promisify(execFile);
const BUILT = join(ROOT, 'build', 'bundle');
const FILES = ['blocklayer.js', 'blocklayer.cjs', 'package.json'];

const digest = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** Copies the built files, again if one changed meanwhile (`npm start` in another test rebuilds them). */
async function copyBuilt(dir: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    for (const file of FILES) {
      await copyFile(join(BUILT, file), join(dir, file)).catch((error: Error) => {
        throw new Error(`${error.message} (run npm run build first)`);
      });
    }
    const same = await Promise.all(FILES.map(async (f) => digest(await readFile(join(dir, f))) === digest(await readFile(join(BUILT, f)))));
    if (same.every(Boolean)) return;
    if (attempt === 20) throw new Error('the built CLI kept changing while it was copied');
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function caches(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.endsWith('.v8cache'));
}

const cli = (dir: string, args: string[]) => run(process.execPath, [join(dir, 'blocklayer.js'), ...args], { cwd: dir });

test('the first run writes the code cache, later runs use it unchanged, and a damaged one is replaced', async (t) => {
  const dir = await tempDir(t, 'blocklayer-launcher-');
  await copyBuilt(dir);
  t.deepEqual(await caches(dir), []);

  t.is((await cli(dir, ['--version'])).stdout.trim(), BLOCKLAYER_VERSION);
  const written = await caches(dir);
  t.is(written.length, 1, 'one cache, named for the bundle');
  const cacheFile = join(dir, written[0]!);
  const first = await readFile(cacheFile);
  t.true(first.length > 100_000, 'it holds the compiled bundle');

  t.is((await cli(dir, ['--version'])).stdout.trim(), BLOCKLAYER_VERSION);
  t.true((await readFile(cacheFile)).equals(first), 'an accepted cache is not written again');

  await writeFile(cacheFile, Buffer.alloc(first.length, 0x5a));
  t.is((await cli(dir, ['--version'])).stdout.trim(), BLOCKLAYER_VERSION, 'V8 refuses the damaged cache and compiles');
  const replaced = await readFile(cacheFile);
  t.false(replaced.equals(Buffer.alloc(first.length, 0x5a)), 'the damaged cache was replaced');
  await cli(dir, ['--version']);
  t.true((await readFile(cacheFile)).equals(replaced), 'and the new one is accepted');
  t.deepEqual(await caches(dir), written, 'no partial files are left');
});

test('code run from the cache loads a plugin from disk through the launcher', async (t) => {
  const dir = await tempDir(t, 'blocklayer-launcher-');
  await copyBuilt(dir);
  await writeFile(join(dir, 'not-a-plugin.mjs'), 'export default { hello: 1 };\n');
  await writeFile(join(dir, 'plugins.json'), JSON.stringify({ plugins: [{ name: 'x', module: './not-a-plugin.mjs' }] }));
  await cli(dir, ['--version']);
  t.is((await caches(dir)).length, 1);
  // Imported: the module was found and read, and its export judged, which import() failing would not reach.
  const error = await t.throwsAsync(cli(dir, ['daemon', '--manifest', join(dir, 'plugins.json')]));
  t.regex((error as Error & { stderr: string }).stderr, /Plugin 'x' \(\.\/not-a-plugin\.mjs\): the default export is not a plugin/);
});

test('where the bundle\'s directory is not writable, the cache goes to the user\'s cache directory, which keeps only the newest', async (t) => {
  const dir = await tempDir(t, 'blocklayer-launcher-');
  await copyBuilt(dir);
  const cacheHome = join(dir, 'cache-home');
  const userCache = join(cacheHome, 'blocklayer');
  await mkdir(userCache, { recursive: true });
  await writeFile(join(userCache, 'blocklayer-0123456789abcdef.v8cache'), 'an older bundle\'s');
  const env = { ...process.env, XDG_CACHE_HOME: cacheHome };
  // As root every directory is writable: run as nobody in a directory only root may write to.
  const asRoot = process.getuid?.() === 0;
  const readOnlyCli = () =>
    asRoot
      ? run('runuser', ['-u', 'nobody', '--', process.execPath, join(dir, 'blocklayer.js'), '--version'], { cwd: dir, env })
      : run(process.execPath, [join(dir, 'blocklayer.js'), '--version'], { cwd: dir, env });
  if (asRoot) {
    await chmod(dir, 0o755);
    await chmod(cacheHome, 0o777);
    await chmod(userCache, 0o777);
  } else {
    await chmod(dir, 0o555);
    t.teardown(() => chmod(dir, 0o755));
  }
  t.is((await readOnlyCli()).stdout.trim(), BLOCKLAYER_VERSION);
  t.deepEqual(await caches(dir), [], 'nothing written beside the bundle');
  const written = await caches(userCache);
  t.is(written.length, 1, "the user's cache holds this bundle's cache only");
  t.not(written[0], 'blocklayer-0123456789abcdef.v8cache');
  const first = await readFile(join(userCache, written[0]!));
  t.true(first.length > 100_000);
  t.is((await readOnlyCli()).stdout.trim(), BLOCKLAYER_VERSION);
  t.true((await readFile(join(userCache, written[0]!))).equals(first), 'found there and used as it is');
});
