/** `blocklayer backup SRC TARGET`: an offline one-shot drive-backup of an image file, with a progress bar. */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { BackupFailed, type BackupRequest, runBackup, type SyncMode, type TargetMode } from './backup-runner.js';

interface BackupOptions {
  sourceFormat: string;
  format?: string;
  sync: SyncMode;
  speed: number;
  mode: TargetMode;
  progress: boolean;
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Bytes per second: an integer, optionally with a binary suffix (k, M, G, T), as qemu-img takes sizes. */
export function parseSpeed(text: string): number {
  const match = /^(\d+)([bkmgt]?)$/i.exec(text.trim());
  const value = match === null ? NaN : Number(match[1]) * UNITS[match[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(value)) throw new InvalidArgumentError('expected bytes per second, e.g. 104857600 or 100M');
  return value;
}

/** `backup of SRC to TARGET: 1073741824 bytes copied in 3.2 s (335 MiB/s)` */
export function summary(source: string, target: string, bytes: number, seconds: number): string {
  const rate = seconds > 0 ? bytes / 2 ** 20 / seconds : 0;
  return `backup of ${source} to ${target}: ${bytes} bytes copied in ${seconds.toFixed(seconds < 1 ? 2 : 1)} s (${rate.toFixed(0)} MiB/s)`;
}

export function backupCommand(program: Command): void {
  program
    .command('backup')
    .description('back up an image file to a new or existing image file with a backup job (drive-backup), then exit')
    .argument('<source>', 'the image file to back up (opened read-only)')
    .argument('<target>', 'the image file to write: created, unless --mode existing')
    .option('--source-format <format>', "the source's format driver", 'raw')
    .option('--format <format>', "the target's format driver (default: the source's)")
    .addOption(
      new Option('--sync <mode>', "what to copy: full (everything), top (what the source's top image allocates; full without a backing file), none (nothing: the target is created backed by the source)")
        .choices(['full', 'top', 'none'])
        .default('full'),
    )
    .option('--speed <bytes/s>', 'rate limit in bytes per second (k, M, G suffixes allowed); 0 = unlimited', parseSpeed, 0)
    .addOption(
      new Option('--mode <mode>', 'absolute-paths: create the target file; existing: open the target file as it is')
        .choices(['absolute-paths', 'existing'])
        .default('absolute-paths'),
    )
    .option('--no-progress', 'no progress bar (shown on stderr only when it is a terminal)')
    .addHelpText(
      'after',
      '\nOn success, one line on stdout: "backup of SOURCE to TARGET: N bytes copied in T s (R MiB/s)", exit code 0.\n' +
        'On failure, "blocklayer backup: MESSAGE" on stderr, exit code 1.\n' +
        'Ctrl-C cancels the backup (exit code 1, "cancelled"); a second Ctrl-C exits at once.\n',
    )
    .action(async (source: string, target: string, options: BackupOptions) => {
      const request: BackupRequest = {
        source,
        target,
        sourceFormat: options.sourceFormat,
        format: options.format,
        sync: options.sync,
        speed: options.speed,
        mode: options.mode,
        progress: options.progress && process.stderr.isTTY === true,
      };
      try {
        const result = await runBackup(request);
        process.stdout.write(`${summary(source, target, result.bytes, result.seconds)}\n`);
      } catch (error) {
        if (!(error instanceof BackupFailed)) throw error;
        process.stderr.write(`blocklayer backup: ${error.message}\n`);
        process.exitCode = 1;
      }
    });
}
