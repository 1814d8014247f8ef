#!/usr/bin/env node
/**
 * Builds the file driver's native addon (sparse_ops.node) with node-gyp.
 * Runs as the package's `install` script and by hand. It never fails: without
 * the addon the file driver uses its portable fallback (no holes reported,
 * zeroes written as data), so a missing compiler must not break the install.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const fallback = 'blocklayer: the file driver will use its portable fallback (no native sparse-ops addon)';

function finish(reason) {
  console.log(`${fallback}: ${reason}`);
  process.exit(0);
}

/** npm hands its bundled node-gyp to install scripts; by hand, look beside npm itself. */
function findNodeGyp() {
  const candidates = [process.env.npm_config_node_gyp];
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const npm = join(dir, 'npm');
    if (existsSync(npm)) candidates.push(join(dirname(realpathSync(npm)), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  candidates.push(join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  return candidates.find((path) => path !== undefined && existsSync(path));
}

/** Headers installed beside the node binary (/usr/bin/node → /usr/include/node), so node-gyp need not download them. */
function findNodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = join(dirname(process.execPath), '..');
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

if (process.env.BLOCKLAYER_NO_NATIVE === '1') finish('BLOCKLAYER_NO_NATIVE=1');
if (process.platform !== 'linux') finish(`the addon uses Linux syscalls (platform ${process.platform})`);
const nodeGyp = findNodeGyp();
if (nodeGyp === undefined) finish('node-gyp not found');

const nodeDir = findNodeDir();
const args = [nodeGyp, 'rebuild', ...(nodeDir === undefined ? [] : [`--nodedir=${nodeDir}`])];
const result = spawnSync(process.execPath, args, { cwd: here, encoding: 'utf8' });
if (result.status !== 0) {
  const log = join(here, 'build', 'build.log');
  mkdirSync(dirname(log), { recursive: true });
  writeFileSync(log, `${result.error?.message ?? ''}${result.stdout ?? ''}${result.stderr ?? ''}`);
  finish(`node-gyp failed, see ${log}`);
}
console.log('blocklayer: built the file driver native addon (drivers/file/native/build/Release/sparse_ops.node)');
