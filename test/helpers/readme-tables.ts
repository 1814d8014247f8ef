/**
 * Which README holds which generated table. `npm run docs` rewrites them;
 * test/docs/readme-tables.test.ts fails when one is stale.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TObject } from '../../core/schema/qapi.js';
import { renderOptionsTable, withTable } from '../../core/schema/options-table.js';
import { fileDriver } from '../../drivers/file/driver.js';
import { memoryDriver } from '../../drivers/memory/driver.js';
import { nbdDriver } from '../../drivers/nbd/driver.js';
import { nullDriver } from '../../drivers/null/driver.js';
import { qcow2Driver } from '../../drivers/qcow2/driver.js';
import { quorumDriver } from '../../drivers/quorum/driver.js';
import { rawDriver } from '../../drivers/raw/driver.js';
import { BlockdevBackup } from '../../plugins/backup/options.js';
import { BlockdevMirror, DriveMirror } from '../../plugins/mirror/options.js';
import { BlockStream } from '../../plugins/stream/options.js';
import { BlockCommit } from '../../plugins/commit/options.js';
import { BlockdevCreateArgs } from '../../plugins/blockdev-create/options.js';
import { BlockDirtyBitmapAdd, BlockDirtyBitmapMerge } from '../../plugins/dirty-bitmap/options.js';
import {
  BlockdevSnapshot,
  BlockdevSnapshotDeleteInternal,
  BlockdevSnapshotInternal,
  BlockdevSnapshotSync,
} from '../../plugins/blockdev-snapshot/options.js';
import { BlockExportOptionsNbd, NbdServerOptions } from '../../plugins/nbd-server/options.js';
import { tlsCredsPskProperties, tlsCredsX509Properties } from '../../plugins/tls-creds/options.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface ReadmeTable {
  readme: string;
  id: string;
  schema: TObject;
}

export const README_TABLES: ReadmeTable[] = [
  { readme: 'drivers/file/README.md', id: 'options', schema: fileDriver.options },
  { readme: 'drivers/file/README.md', id: 'create-options', schema: fileDriver.createOptions! },
  { readme: 'drivers/file/README.md', id: 'blockdev-create-options', schema: fileDriver.blockdevCreateOptions! },
  { readme: 'drivers/raw/README.md', id: 'options', schema: rawDriver.options },
  { readme: 'drivers/raw/README.md', id: 'create-options', schema: rawDriver.createOptions! },
  { readme: 'drivers/memory/README.md', id: 'options', schema: memoryDriver.options },
  { readme: 'drivers/null/README.md', id: 'options', schema: nullDriver.options },
  { readme: 'drivers/nbd/README.md', id: 'options', schema: nbdDriver.options },
  { readme: 'drivers/qcow2/README.md', id: 'options', schema: qcow2Driver.options },
  { readme: 'drivers/qcow2/README.md', id: 'create-options', schema: qcow2Driver.createOptions! },
  { readme: 'drivers/qcow2/README.md', id: 'blockdev-create-options', schema: qcow2Driver.blockdevCreateOptions! },
  { readme: 'drivers/quorum/README.md', id: 'options', schema: quorumDriver.options },
  { readme: 'plugins/backup/README.md', id: 'options', schema: BlockdevBackup },
  { readme: 'plugins/mirror/README.md', id: 'options', schema: BlockdevMirror },
  { readme: 'plugins/mirror/README.md', id: 'drive-mirror-options', schema: DriveMirror },
  { readme: 'plugins/stream/README.md', id: 'options', schema: BlockStream },
  { readme: 'plugins/commit/README.md', id: 'options', schema: BlockCommit },
  { readme: 'plugins/blockdev-create/README.md', id: 'options', schema: BlockdevCreateArgs },
  { readme: 'plugins/dirty-bitmap/README.md', id: 'add-options', schema: BlockDirtyBitmapAdd },
  { readme: 'plugins/dirty-bitmap/README.md', id: 'merge-options', schema: BlockDirtyBitmapMerge },
  { readme: 'plugins/blockdev-snapshot/README.md', id: 'sync-options', schema: BlockdevSnapshotSync },
  { readme: 'plugins/blockdev-snapshot/README.md', id: 'options', schema: BlockdevSnapshot },
  { readme: 'plugins/blockdev-snapshot/README.md', id: 'internal-options', schema: BlockdevSnapshotInternal },
  { readme: 'plugins/blockdev-snapshot/README.md', id: 'delete-internal-options', schema: BlockdevSnapshotDeleteInternal },
  { readme: 'plugins/nbd-server/README.md', id: 'nbd-server-options', schema: NbdServerOptions },
  { readme: 'plugins/nbd-server/README.md', id: 'export-options', schema: BlockExportOptionsNbd },
  { readme: 'plugins/tls-creds/README.md', id: 'psk-options', schema: tlsCredsPskProperties },
  { readme: 'plugins/tls-creds/README.md', id: 'x509-options', schema: tlsCredsX509Properties },
];

/** The README's text with every table of it regenerated. */
export async function regenerated(readme: string): Promise<{ path: string; current: string; expected: string }> {
  const path = join(ROOT, readme);
  const current = await readFile(path, 'utf8');
  let expected = current;
  for (const table of README_TABLES.filter((t) => t.readme === readme)) {
    expected = withTable(expected, table.id, renderOptionsTable(table.schema));
  }
  return { path, current, expected };
}

/** `npm run docs`: rewrites the tables. */
export async function updateReadmes(): Promise<void> {
  for (const readme of new Set(README_TABLES.map((t) => t.readme))) {
    const { path, current, expected } = await regenerated(readme);
    if (current !== expected) await writeFile(path, expected);
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) await updateReadmes();
