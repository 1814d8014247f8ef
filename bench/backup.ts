/**
 * Full backup throughput: our daemon's blockdev-backup against
 * qemu-storage-daemon's, raw→raw, on the same 1 GiB image of random data,
 * alternating (the order flips every run), and the median ratio
 * (ours / QEMU's; above 1 means we are faster).
 *
 *   npx tsx bench/backup.ts [--runs 3] [--warmup 1] [--size-mib 1024] [--dir /tmp] [--tsx] [--cpu-prof DIR]
 *
 * Both sides are measured the same way: a daemon process started with the
 * same --blockdev options (file+raw nodes `src` and `tgt`, the target a
 * fresh sparse raw file each run) and a QMP socket; the clock runs from
 * sending `blockdev-backup` (sync=full) to receiving BLOCK_JOB_COMPLETED.
 * That is fairer than running our side in this process: both pay a process
 * of their own, QMP, and the same event round trip, and neither shares an
 * event loop with the harness.
 *
 * Our daemon runs compiled, as `npm start` runs it: the current sources are
 * compiled with tsconfig.build.json into the bench's temporary directory
 * (build/ may be stale and belongs to `npm run build`), with the file
 * driver's native addon placed where the compiled driver looks for it.
 * `--tsx` runs bin/blocklayer.ts through tsx instead. `--cpu-prof DIR`
 * writes a V8 CPU profile of each of our daemon runs to DIR.
 *
 * Both use the host page cache; `sync` runs between runs so neither pays
 * for the other's dirty pages. The first backup after the source is written
 * is slower whichever side runs it (fresh page-cache memory; on a VM,
 * memory the host has not backed yet), so `--warmup` pairs run first and
 * are not counted. The source image is made once with
 * crypto-random data (not a qemu-io pattern), so nothing reads as zero.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, open, readFile, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { QmpClient } from '../core/qmp/qmp-client.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const ADDON = join('drivers', 'file', 'native', 'build', 'Release', 'sparse_ops.node');

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '1' },
    'size-mib': { type: 'string', default: '1024' },
    dir: { type: 'string', default: tmpdir() },
    tsx: { type: 'boolean', default: false },
    'cpu-prof': { type: 'string' },
  },
});
const RUNS = Number(values.runs);
const WARMUP = Number(values.warmup);
const SIZE = Number(values['size-mib']) * 2 ** 20;

/** Writes `size` bytes of random data, 16 MiB at a time. */
async function randomImage(path: string, size: number): Promise<void> {
  const file = await open(path, 'w');
  const chunk = Buffer.alloc(16 << 20);
  for (let offset = 0; offset < size; offset += chunk.length) {
    const piece = chunk.subarray(0, Math.min(chunk.length, size - offset));
    randomFillSync(piece);
    await file.write(piece, 0, piece.length, offset);
  }
  await file.close();
}

/** Compiles the sources into `dir`/build, beside a node_modules link, with the native addon where the compiled driver looks. */
async function compileOurs(dir: string): Promise<string> {
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
  return join(out, 'bin', 'blocklayer.js');
}

async function waitForSocket(path: string, child: ChildProcess, stderr: () => string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if ((await stat(path).catch(() => undefined))?.isSocket()) return;
    if (child.exitCode !== null) throw new Error(`daemon exited with ${child.exitCode}: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`daemon did not create ${path}: ${stderr()}`);
}

type Side = 'ours' | 'qemu';

interface Measurement {
  /** MiB per second of wall time. */
  speed: number;
  /** CPU seconds (user + system, every thread) the daemon spent during the backup; NaN without /proc. */
  cpu: number;
}

/** User + system CPU seconds of a process so far (Linux /proc; clock ticks of 10 ms). */
async function cpuSeconds(pid: number | undefined): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** One timed backup: a fresh sparse target, a daemon on src+tgt, blockdev-backup to BLOCK_JOB_COMPLETED. */
async function backupOnce(side: Side, dir: string, src: string, ourCli: string, runIndex: number): Promise<Measurement> {
  const tgt = join(dir, 'tgt.raw');
  await rm(tgt, { force: true });
  await runTool('qemu-img', ['create', '-f', 'raw', tgt, String(SIZE)]);
  await runTool('sync', []);
  const socket = join(dir, `${side}.sock`);
  const blockdevs = [
    '--blockdev', `driver=file,node-name=src-file,filename=${src}`,
    '--blockdev', 'driver=raw,node-name=src,file=src-file',
    '--blockdev', `driver=file,node-name=tgt-file,filename=${tgt}`,
    '--blockdev', 'driver=raw,node-name=tgt,file=tgt-file',
    '--chardev', `socket,path=${socket},server=on,wait=off,id=mon0`,
    '--monitor', 'chardev=mon0',
  ];
  const profile = values['cpu-prof'] === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', resolve(values['cpu-prof']), '--cpu-prof-name', `ours-${runIndex > 0 ? `run${runIndex}` : `warmup${1 - runIndex}`}.cpuprofile`];
  const [command, args] =
    side === 'qemu'
      ? ['qemu-storage-daemon', blockdevs]
      : [process.execPath, [...profile, ...(values.tsx ? ['--import', 'tsx', join(ROOT, 'bin', 'blocklayer.ts')] : [ourCli]), 'daemon', ...blockdevs]];
  const child = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise((r) => child.once('exit', r));
  try {
    await waitForSocket(socket, child, () => stderr);
    const client = await QmpClient.connect(socket, { negotiate: true });
    const cpuBefore = await cpuSeconds(child.pid);
    const start = process.hrtime.bigint();
    const reply = await client.execute('blockdev-backup', { 'job-id': 'bench', device: 'src', target: 'tgt', sync: 'full' });
    if ('error' in reply) throw new Error(`${side}: blockdev-backup: ${JSON.stringify(reply.error)}`);
    const event = await client.waitEvent('BLOCK_JOB_COMPLETED');
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpu = (await cpuSeconds(child.pid)) - cpuBefore;
    if (event.data?.error !== undefined || event.data?.offset !== SIZE) throw new Error(`${side}: ${JSON.stringify(event.data)}`);
    await client.execute('quit');
    await client.close();
    await exited;
    return { speed: SIZE / 2 ** 20 / seconds, cpu };
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
  }
}

async function runTool(tool: string, args: string[]): Promise<string> {
  return (await run(tool, args, { maxBuffer: 1 << 20 })).stdout;
}

function median(list: number[]): number {
  const sorted = [...list].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const dir = await mkdtemp(join(values.dir, 'blocklayer-bench-'));
try {
  const ourCli = values.tsx ? '' : await compileOurs(dir);
  const src = join(dir, 'src.raw');
  await randomImage(src, SIZE);
  await runTool('sync', []);
  console.log(`backup raw→raw, ${SIZE / 2 ** 20} MiB of random data, sync=full, ${RUNS} runs (+${WARMUP} warm-up), alternating; our daemon ${values.tsx ? 'under tsx' : 'compiled'}`);
  const ratios: number[] = [];
  const results: Record<Side, number[]> = { ours: [], qemu: [] };
  for (let i = 1 - WARMUP; i <= RUNS; i++) {
    const order: Side[] = i % 2 === 1 ? ['ours', 'qemu'] : ['qemu', 'ours'];
    const speed: Partial<Record<Side, number>> = {};
    const cpu: Partial<Record<Side, number>> = {};
    for (const side of order) {
      ({ speed: speed[side], cpu: cpu[side] } = await backupOnce(side, dir, src, ourCli, i));
      if (i > 0) results[side].push(speed[side]);
      const same = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, join(dir, 'tgt.raw')]).catch(() => 'differs');
      if (!same.includes('identical')) throw new Error(`${side}: the target differs from the source`);
      await runTool('sync', []);
    }
    const ratio = speed.ours! / speed.qemu!;
    if (i > 0) ratios.push(ratio);
    console.log(`${(i > 0 ? `run ${i}` : 'warm-up').padEnd(7)}  blocklayer ${speed.ours!.toFixed(0).padStart(6)} MiB/s (cpu ${cpu.ours!.toFixed(2)} s)  qemu-storage-daemon ${speed.qemu!.toFixed(0).padStart(6)} MiB/s (cpu ${cpu.qemu!.toFixed(2)} s)  ratio ${ratio.toFixed(2)}`);
  }
  console.log(
    `median   blocklayer ${median(results.ours).toFixed(0).padStart(6)} MiB/s                 qemu-storage-daemon ${median(results.qemu).toFixed(0).padStart(6)} MiB/s                 ratio ${median(ratios).toFixed(2)} (median of the per-run ratios)`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
