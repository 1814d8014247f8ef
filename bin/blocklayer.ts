#!/usr/bin/env node
/** The blocklayer command line: parses argv and hands over to the core API. */
import { Command } from 'commander';
import { errorText } from '../core/errors.js';
import { BLOCKLAYER_VERSION } from '../core/version.js';
import { amendCommand } from './commands/amend.js';
import { backupCommand } from './commands/backup.js';
import { benchCommand } from './commands/bench.js';
import { bitmapCommand } from './commands/bitmap.js';
import { checkCommand } from './commands/check.js';
import { commitCommand } from './commands/commit.js';
import { compareCommand } from './commands/compare.js';
import { convertCommand } from './commands/convert.js';
import { createCommand } from './commands/create.js';
import { daemonCommand } from './commands/daemon.js';
import { ddCommand } from './commands/dd.js';
import { infoCommand } from './commands/info.js';
import { mapCommand } from './commands/map.js';
import { measureCommand } from './commands/measure.js';
import { qmpCommand } from './commands/qmp.js';
import { rebaseCommand } from './commands/rebase.js';
import { resizeCommand } from './commands/resize.js';
import { snapshotCommand } from './commands/snapshot.js';

const program = new Command('blocklayer')
  .description('a block layer for Node.js that speaks QEMU\'s QMP')
  .version(BLOCKLAYER_VERSION);
daemonCommand(program);
qmpCommand(program);
backupCommand(program);
// qemu-img's image tools, over the driver layer.
createCommand(program);
infoCommand(program);
mapCommand(program);
checkCommand(program);
compareCommand(program);
convertCommand(program);
rebaseCommand(program);
resizeCommand(program);
amendCommand(program);
snapshotCommand(program);
commitCommand(program);
measureCommand(program);
ddCommand(program);
bitmapCommand(program);
benchCommand(program);

program.parseAsync(process.argv).catch((error: unknown) => {
  process.stderr.write(`blocklayer: ${errorText(error)}\n`);
  process.exit(1);
});
