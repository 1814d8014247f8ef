/**
 * The package's built-in plugins as static imports, by their module in
 * plugin-manifest.json: the bundled CLI carries them inside (one file to
 * load instead of some 250 ES modules, which is most of its start-up), and
 * unbundled they are the same modules the manifest names.
 */
import type { LinkedPluginModules } from '../core/plugin/plugin-loader.js';

export const LINKED_PLUGINS: LinkedPluginModules = new Map<string, () => Promise<unknown>>([
  ['./drivers/file', () => import('../drivers/file/index.js')],
  ['./drivers/raw', () => import('../drivers/raw/index.js')],
  ['./drivers/qcow2', () => import('../drivers/qcow2/index.js')],
  ['./drivers/memory', () => import('../drivers/memory/index.js')],
  ['./drivers/null', () => import('../drivers/null/index.js')],
  ['./drivers/nbd', () => import('../drivers/nbd/index.js')],
  ['./drivers/quorum', () => import('../drivers/quorum/index.js')],
  ['./plugins/tls-creds', () => import('../plugins/tls-creds/index.js')],
  ['./plugins/qmp-block-commands', () => import('../plugins/qmp-block-commands/index.js')],
  ['./plugins/job-commands', () => import('../plugins/job-commands/index.js')],
  ['./plugins/transaction', () => import('../plugins/transaction/index.js')],
  ['./plugins/backup', () => import('../plugins/backup/index.js')],
  ['./plugins/mirror', () => import('../plugins/mirror/index.js')],
  ['./plugins/stream', () => import('../plugins/stream/index.js')],
  ['./plugins/commit', () => import('../plugins/commit/index.js')],
  ['./plugins/blockdev-create', () => import('../plugins/blockdev-create/index.js')],
  ['./plugins/abort', () => import('../plugins/abort/index.js')],
  ['./plugins/dirty-bitmap', () => import('../plugins/dirty-bitmap/index.js')],
  ['./plugins/blockdev-snapshot', () => import('../plugins/blockdev-snapshot/index.js')],
  ['./plugins/nbd-server', () => import('../plugins/nbd-server/index.js')],
  ['./plugins/write-threshold', () => import('../plugins/write-threshold/index.js')],
]);
