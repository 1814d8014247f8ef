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
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  compileOurs,
  cpuProfileFlags,
  cpuSeconds,
  DAEMON_BENCH_OPTIONS,
  median,
  randomImage,
  runCounts,
  runTool,
  type Side,
  sourceAndFreshTarget,
  startBenchDaemon,
} from './daemon-runs.js';

const { values } = parseArgs({ options: DAEMON_BENCH_OPTIONS });
const { runs: RUNS, warmup: WARMUP, size: SIZE } = runCounts(values);

interface Measurement {
  /** MiB per second of wall time. */
  speed: number;
  /** CPU seconds (user + system, every thread) the daemon spent during the backup; NaN without /proc. */
  cpu: number;
}

/** One timed backup: a fresh sparse target, a daemon on src+tgt, blockdev-backup to BLOCK_JOB_COMPLETED. */
async function backupOnce(side: Side, dir: string, src: string, ourCli: string, runIndex: number): Promise<Measurement> {
  const blockdevs = await sourceAndFreshTarget(dir, src, SIZE);
  const socket = join(dir, `${side}.sock`);
  const profile = cpuProfileFlags(values['cpu-prof'], 'ours', runIndex);
  const daemon = await startBenchDaemon({ side, blockdevs, socket, ourCli, nodeOptions: profile });
  try {
    const { client } = daemon;
    const cpuBefore = await cpuSeconds(daemon.pid);
    const start = process.hrtime.bigint();
    const reply = await client.execute('blockdev-backup', { 'job-id': 'bench', device: 'src', target: 'tgt', sync: 'full' });
    if ('error' in reply) throw new Error(`${side}: blockdev-backup: ${JSON.stringify(reply.error)}`);
    const event = await client.waitEvent('BLOCK_JOB_COMPLETED');
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpu = (await cpuSeconds(daemon.pid)) - cpuBefore;
    if (event.data?.error !== undefined || event.data?.offset !== SIZE) throw new Error(`${side}: ${JSON.stringify(event.data)}`);
    await daemon.quit();
    return { speed: SIZE / 2 ** 20 / seconds, cpu };
  } finally {
    await daemon.kill();
  }
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
