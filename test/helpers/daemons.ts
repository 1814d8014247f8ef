/**
 * Starts qemu-storage-daemon and our daemon with the same command line, for
 * tests that hold QEMU up as the oracle. Each gets a QMP monitor on a fresh
 * unix socket, added the way qemu-storage-daemon's documentation does it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = join(ROOT, 'bin/blocklayer.ts');

export interface RunningDaemon {
  socket: string;
  dir: string;
  process: ChildProcess;
  /** Everything the daemon wrote to stderr so far. */
  stderr(): string;
  stop(): Promise<void>;
}

/** Our CLI under tsx, as `npm start` runs it from source. */
export function blocklayerCommand(args: readonly string[]): [string, string[]] {
  return [process.execPath, ['--import', 'tsx', CLI, ...args]];
}

/** Whether something listens on the socket: the file exists from bind() on, connections are refused until listen(). */
function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

async function waitForSocket(path: string, child: ChildProcess, errors: () => string): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    if ((await stat(path).catch(() => undefined))?.isSocket() && (await accepts(path))) return;
    if (child.exitCode !== null) throw new Error(`daemon exited with ${child.exitCode}: ${errors()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`daemon did not create ${path}: ${errors()}`);
}

export async function startDaemon(kind: 'qemu' | 'ours', args: readonly string[], monitorOptions = ''): Promise<RunningDaemon> {
  const dir = await mkdtemp(join(tmpdir(), `blocklayer-${kind}-`));
  const socket = join(dir, 'qmp.sock');
  const monitor = ['--chardev', `socket,path=${socket},server=on,wait=off,id=mon0`, '--monitor', `chardev=mon0${monitorOptions}`];
  const [command, argv] = kind === 'qemu' ? ['qemu-storage-daemon', [...args, ...monitor]] : blocklayerCommand(['daemon', ...args, ...monitor]);
  const child = spawn(command, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout!.resume();
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitForSocket(socket, child, () => stderr);
  } catch (error) {
    // No caller gets a handle to stop, so stop the daemon and remove its directory here.
    await stop();
    throw error;
  }
  return { socket, dir, process: child, stderr: () => stderr, stop };
}
