/**
 * What the daemon benchmarks (backup.ts, mirror.ts) share: our daemon
 * compiled from the current sources, a daemon process per run (ours or
 * qemu-storage-daemon) on the same --blockdev options with a QMP socket,
 * its CPU time from /proc, an image of random data, the median, and the
 * command-line options both take.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { copyFile, mkdir, open, readFile, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { QmpClient } from '../core/qmp/qmp-client.js';

const run = promisify(execFile);
export const ROOT = fileURLToPath(new URL('../', import.meta.url));
const ADDON = join('drivers', 'file', 'native', 'build', 'Release', 'sparse_ops.node');

export type Side = 'ours' | 'qemu';

/** The options of a daemon benchmark, for parseArgs; a benchmark adds its own. */
export const DAEMON_BENCH_OPTIONS = {
  runs: { type: 'string', default: '3' },
  warmup: { type: 'string', default: '1' },
  'size-mib': { type: 'string', default: '1024' },
  dir: { type: 'string', default: tmpdir() },
  tsx: { type: 'boolean', default: false },
  'cpu-prof': { type: 'string' },
} as const;

/** --runs, --warmup and --size-mib as numbers (the size in bytes). */
export function runCounts(values: { runs: string; warmup: string; 'size-mib': string }): { runs: number; warmup: number; size: number } {
  return { runs: Number(values.runs), warmup: Number(values.warmup), size: Number(values['size-mib']) * 2 ** 20 };
}

/** Writes `size` bytes of random data, 16 MiB at a time. */
export async function randomImage(path: string, size: number): Promise<void> {
  const file = await open(path, 'w');
  const chunk = Buffer.alloc(16 << 20);
  for (let offset = 0; offset < size; offset += chunk.length) {
    const piece = chunk.subarray(0, Math.min(chunk.length, size - offset));
    randomFillSync(piece);
    await file.write(piece, 0, piece.length, offset);
  }
  await file.close();
}

/**
 * Compiles the sources into `dir`/build, beside a node_modules link, with
 * the native addon where the compiled driver looks, and bundles the CLI as
 * `npm run build` does: the path returned is the bundle, the CLI as shipped.
 */
export async function compileOurs(dir: string): Promise<string> {
  const out = join(dir, 'build');
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  await run(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', out]).catch((error: { stdout?: string }) => {
    // tsc emits despite type errors elsewhere in the tree; go on if our entry point was written.
    console.error(`warning: tsc reported errors (compiled anyway):\n${error.stdout ?? ''}`);
  });
  await stat(join(out, 'bin', 'blocklayer.js'));
  if ((await stat(join(ROOT, ADDON)).catch(() => undefined)) !== undefined) {
    await mkdir(join(out, ADDON, '..'), { recursive: true });
    await copyFile(join(ROOT, ADDON), join(out, ADDON));
  }
  await run(process.execPath, [join(ROOT, 'scripts', 'bundle-cli.mjs'), out]);
  return join(out, 'bundle', 'blocklayer.js');
}

async function waitForSocket(path: string, child: ChildProcess, stderr: () => string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if ((await stat(path).catch(() => undefined))?.isSocket()) return;
    if (child.exitCode !== null) throw new Error(`daemon exited with ${child.exitCode}: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`daemon did not create ${path}: ${stderr()}`);
}

/** User + system CPU seconds of a process so far (Linux /proc; clock ticks of 10 ms); NaN without /proc. */
export async function cpuSeconds(pid: number | undefined): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

export interface DaemonOptions {
  side: Side;
  /** --blockdev arguments, the same for both sides. */
  blockdevs: string[];
  socket: string;
  /** Our compiled CLI, or '' to run bin/blocklayer.ts under tsx. */
  ourCli: string;
  /** Extra node options for our daemon (--cpu-prof …). */
  nodeOptions?: string[];
}

export interface RunningBenchDaemon {
  client: QmpClient;
  pid: number | undefined;
  /** quit, then wait for the process to exit. */
  quit(): Promise<void>;
  /** Kills the process if it is still there. */
  kill(): Promise<void>;
}

/** Starts a daemon on the given --blockdev options with a QMP monitor on `socket`, connected and negotiated. */
export async function startBenchDaemon(options: DaemonOptions): Promise<RunningBenchDaemon> {
  const monitor = ['--chardev', `socket,path=${options.socket},server=on,wait=off,id=mon0`, '--monitor', 'chardev=mon0'];
  const ours = options.ourCli === '' ? ['--import', 'tsx', join(ROOT, 'bin', 'blocklayer.ts')] : [options.ourCli];
  const [command, args] =
    options.side === 'qemu'
      ? ['qemu-storage-daemon', [...options.blockdevs, ...monitor]]
      : [process.execPath, [...(options.nodeOptions ?? []), ...ours, 'daemon', ...options.blockdevs, ...monitor]];
  const child = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise((r) => child.once('exit', r));
  const kill = async (): Promise<void> => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
  };
  try {
    await waitForSocket(options.socket, child, () => stderr);
    const client = await QmpClient.connect(options.socket, { negotiate: true });
    return {
      client,
      pid: child.pid,
      async quit() {
        await client.execute('quit');
        await client.close();
        await exited;
      },
      kill,
    };
  } catch (error) {
    await kill();
    throw error;
  }
}

export async function runTool(tool: string, args: string[]): Promise<string> {
  return (await run(tool, args, { maxBuffer: 1 << 20 })).stdout;
}

export function median(list: number[]): number {
  const sorted = [...list].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * A fresh sparse raw target beside `src` (`dir`/tgt.raw, synced), and the
 * --blockdev options of a job's raw source `src` and raw target `tgt`.
 */
export async function sourceAndFreshTarget(dir: string, src: string, size: number): Promise<string[]> {
  const tgt = join(dir, 'tgt.raw');
  await rm(tgt, { force: true });
  await runTool('qemu-img', ['create', '-f', 'raw', tgt, String(size)]);
  await runTool('sync', []);
  return [
    '--blockdev', `driver=file,node-name=src-file,filename=${src}`,
    '--blockdev', 'driver=raw,node-name=src,file=src-file',
    '--blockdev', `driver=file,node-name=tgt-file,filename=${tgt}`,
    '--blockdev', 'driver=raw,node-name=tgt,file=tgt-file',
  ];
}

/** node's --cpu-prof flags for our daemon's run `runIndex` (warm-ups are 0 and below), or none without `dir`. */
export function cpuProfileFlags(dir: string | undefined, prefix: string, runIndex: number): string[] {
  if (dir === undefined) return [];
  const name = `${prefix}-${runIndex > 0 ? `run${runIndex}` : `warmup${1 - runIndex}`}.cpuprofile`;
  return ['--cpu-prof', '--cpu-prof-dir', resolve(dir), '--cpu-prof-name', name];
}
