/**
 * `--daemonize` as qemu-storage-daemon does it: the parent starts the daemon
 * in the background and exits once startup is complete (0), or with the
 * daemon's startup error (1).
 */
import { spawn } from 'node:child_process';

/** Set in the daemon's environment so it knows to report readiness to its parent. */
const DAEMONIZED = 'BLOCKLAYER_DAEMONIZED';

export function isDaemonChild(): boolean {
  return process.env[DAEMONIZED] === '1' && typeof process.send === 'function';
}

/** In the parent: start the daemon detached, relay its startup errors, exit when it is ready. */
export async function daemonize(argv: readonly string[]): Promise<never> {
  const args = [...process.execArgv, ...argv.filter((a) => a !== '--daemonize')];
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: { ...process.env, [DAEMONIZED]: '1' },
  });
  child.stderr?.pipe(process.stderr);
  const code = await new Promise<number>((resolve) => {
    child.once('message', (message) => {
      if (message === 'ready') resolve(0);
    });
    child.once('exit', (status) => resolve(status === 0 ? 1 : (status ?? 1)));
  });
  child.stderr?.unpipe(process.stderr);
  child.stderr?.destroy();
  if (child.connected) child.disconnect();
  child.unref();
  process.exit(code);
}

/** In the daemon: startup is complete; let the parent go (its end of our stderr closes with it). */
export function reportReady(): void {
  if (!isDaemonChild()) return;
  process.stderr.on('error', () => undefined);
  process.send!('ready', () => process.disconnect());
}
