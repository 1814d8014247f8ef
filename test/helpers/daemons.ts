/**
 * Starts qemu-storage-daemon and our daemon with the same command line, for
 * tests that hold QEMU up as the oracle. Each gets a QMP monitor on a fresh
 * unix socket, added the way qemu-storage-daemon's documentation does it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
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

const BUNDLE = join(ROOT, 'build/bundle/blocklayer.js');
/** The sources `npm run build` compiles (tsc into build/, then bundled from there), and what else the bundle depends on. */
const SOURCE_DIRS = ['core', 'drivers', 'plugins', 'bin'];
const BUILD_FILES = ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'scripts/bundle-cli.mjs'];

const modified = (path: string): number => statSync(join(ROOT, path), { throwIfNoEntry: false })?.mtimeMs ?? Infinity;

/**
 * Whether the built CLI is current: every source compiled since it was last
 * edited, and bundled since it was compiled (a bundle made from an older
 * compile is not).
 */
function bundleIsCurrent(): boolean {
  const bundled = modified(relative(ROOT, BUNDLE));
  if (bundled === Infinity) return false;
  const sources = SOURCE_DIRS.flatMap((dir) =>
    readdirSync(join(ROOT, dir), { recursive: true, encoding: 'utf8' })
      .filter((name) => name.endsWith('.ts'))
      .map((name) => join(dir, name)),
  );
  return (
    BUILD_FILES.every((file) => modified(file) <= bundled) &&
    sources.every((source) => {
      const compiled = modified(join('build', source.replace(/\.ts$/, '.js')));
      return modified(source) <= compiled && compiled <= bundled;
    })
  );
}

/**
 * Our CLI as the user runs it, the built bundle, when that is current (CI
 * builds before it tests); else from the sources under tsx, so that a test
 * never runs code older than the checkout. The bundle starts in a tenth of
 * a second, tsx in one to three on this machine, and the CLI tests start
 * hundreds of processes. A command line with --manifest runs under tsx
 * too: the test manifests name plugins by their TypeScript sources.
 */
const bundleCurrent = bundleIsCurrent();
/** This checkout's tsx and tsconfig, so that the CLI runs from its sources in whatever directory a test starts it (children inherit the variable). */
const TSX = import.meta.resolve('tsx');
process.env.TSX_TSCONFIG_PATH ??= join(ROOT, 'tsconfig.json');

export function blocklayerCommand(args: readonly string[]): [string, string[]] {
  const fromSource = !bundleCurrent || args.includes('--manifest');
  return [process.execPath, [...(fromSource ? ['--import', TSX, CLI] : [BUNDLE]), ...args]];
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
