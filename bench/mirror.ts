/**
 * Mirror throughput: our daemon's blockdev-mirror against
 * qemu-storage-daemon's, raw→raw, on the same image of random data (1 GiB
 * by default), alternating (the order flips every run), and the median
 * ratio (ours / QEMU's; above 1 means we are faster).
 *
 *   npx tsx bench/mirror.ts [--runs 3] [--warmup 1] [--size-mib 1024] [--copy-mode background|write-blocking] [--dir /tmp] [--tsx] [--cpu-prof DIR]
 *
 * Measured as bench/backup.ts measures backups (see there and
 * bench/daemon-runs.ts): a daemon process per run with the same --blockdev
 * options (file+raw nodes `src` and `tgt`, the target a fresh sparse raw
 * file each run) and a QMP socket. The clock runs from sending
 * `blockdev-mirror` (sync=full) to BLOCK_JOB_READY (the copy), then on
 * through `block-job-complete` to BLOCK_JOB_COMPLETED (the pivot); the
 * figure is MiB per second of the whole. Each run's target is compared
 * with the source (qemu-img compare). No guest writes: this is the copy
 * engine and the job loop, side by side.
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

const { values } = parseArgs({ options: { ...DAEMON_BENCH_OPTIONS, 'copy-mode': { type: 'string', default: 'background' } } });
const { runs: RUNS, warmup: WARMUP, size: SIZE } = runCounts(values);

interface Measurement {
  /** MiB per second of wall time, command to COMPLETED. */
  speed: number;
  /** Seconds from the command to READY. */
  ready: number;
  /** CPU seconds (user + system, every thread) the daemon spent during the job; NaN without /proc. */
  cpu: number;
}

/** One timed mirror: a fresh sparse target, a daemon on src+tgt, blockdev-mirror to READY, complete to COMPLETED. */
async function mirrorOnce(side: Side, dir: string, src: string, ourCli: string, runIndex: number): Promise<Measurement> {
  const blockdevs = await sourceAndFreshTarget(dir, src, SIZE);
  const profile = cpuProfileFlags(values['cpu-prof'], 'mirror-ours', runIndex);
  const daemon = await startBenchDaemon({ side, blockdevs, socket: join(dir, `${side}.sock`), ourCli, nodeOptions: profile });
  try {
    const { client } = daemon;
    const cpuBefore = await cpuSeconds(daemon.pid);
    const start = process.hrtime.bigint();
    const args = { 'job-id': 'bench', device: 'src', target: 'tgt', sync: 'full', 'copy-mode': values['copy-mode'] };
    const reply = await client.execute('blockdev-mirror', args);
    if ('error' in reply) throw new Error(`${side}: blockdev-mirror: ${JSON.stringify(reply.error)}`);
    const ready = await client.waitEvent('BLOCK_JOB_READY');
    const readySeconds = Number(process.hrtime.bigint() - start) / 1e9;
    const completing = client.waitEvent('BLOCK_JOB_COMPLETED');
    const done = await client.execute('block-job-complete', { device: 'bench' });
    if ('error' in done) throw new Error(`${side}: block-job-complete: ${JSON.stringify(done.error)}`);
    const event = await completing;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpu = (await cpuSeconds(daemon.pid)) - cpuBefore;
    if (ready.data?.offset !== SIZE || event.data?.error !== undefined || event.data?.offset !== SIZE) {
      throw new Error(`${side}: ${JSON.stringify(ready.data)} ${JSON.stringify(event.data)}`);
    }
    await daemon.quit();
    return { speed: SIZE / 2 ** 20 / seconds, ready: readySeconds, cpu };
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
  console.log(
    `mirror raw→raw, ${SIZE / 2 ** 20} MiB of random data, sync=full, copy-mode=${values['copy-mode']}, command to COMPLETED, ` +
      `${RUNS} runs (+${WARMUP} warm-up), alternating; our daemon ${values.tsx ? 'under tsx' : 'compiled'}`,
  );
  const ratios: number[] = [];
  const results: Record<Side, number[]> = { ours: [], qemu: [] };
  for (let i = 1 - WARMUP; i <= RUNS; i++) {
    const order: Side[] = i % 2 === 1 ? ['ours', 'qemu'] : ['qemu', 'ours'];
    const m: Partial<Record<Side, Measurement>> = {};
    for (const side of order) {
      m[side] = await mirrorOnce(side, dir, src, ourCli, i);
      if (i > 0) results[side].push(m[side].speed);
      const same = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, join(dir, 'tgt.raw')]).catch(() => 'differs');
      if (!same.includes('identical')) throw new Error(`${side}: the target differs from the source`);
      await runTool('sync', []);
    }
    const ratio = m.ours!.speed / m.qemu!.speed;
    if (i > 0) ratios.push(ratio);
    const show = (x: Measurement): string => `${x.speed.toFixed(0).padStart(6)} MiB/s (ready ${x.ready.toFixed(2)} s, cpu ${x.cpu.toFixed(2)} s)`;
    console.log(`${(i > 0 ? `run ${i}` : 'warm-up').padEnd(7)}  blocklayer ${show(m.ours!)}  qemu-storage-daemon ${show(m.qemu!)}  ratio ${ratio.toFixed(2)}`);
  }
  console.log(
    `median   blocklayer ${median(results.ours).toFixed(0).padStart(6)} MiB/s${' '.repeat(28)}qemu-storage-daemon ${median(results.qemu).toFixed(0).padStart(6)} MiB/s${' '.repeat(28)}ratio ${median(ratios).toFixed(2)} (median of the per-run ratios)`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
