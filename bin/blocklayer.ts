#!/usr/bin/env node
/** The blocklayer command line: parses argv and hands over to the core API. */
import { Command } from 'commander';
import { BLOCKLAYER_VERSION } from '../core/version.js';
import { backupCommand } from './commands/backup.js';
import { daemonCommand } from './commands/daemon.js';
import { qmpCommand } from './commands/qmp.js';

const program = new Command('blocklayer')
  .description('a block layer for Node.js that speaks QEMU\'s QMP')
  .version(BLOCKLAYER_VERSION);
daemonCommand(program);
qmpCommand(program);
backupCommand(program);

program.parseAsync(process.argv).catch((error: unknown) => {
  process.stderr.write(`blocklayer: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
