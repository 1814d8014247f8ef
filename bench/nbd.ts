/**
 * NBD throughput, both directions of the protocol against QEMU's:
 *
 * - server: `nbdcopy` reading a whole export out of our daemon
 *   (`--nbd-server`/`--export`) vs out of `qemu-nbd` (read-only,
 *   `--shared=8`, so both advertise multi-conn and nbdcopy opens 4
 *   connections), the same image, into a local file;
 * - client: `blocklayer convert -f raw -O raw URI out.raw` (our nbd driver
 *   under the image tools) vs `qemu-img convert -f raw -O raw URI out.raw`,
 *   the export served by `qemu-nbd`.
 *
 *   npx tsx bench/nbd.ts [--runs 3] [--size-mib 1024] [--dir /tmp] [--tsx]
 *
 * Each run does both sides, the order flipping every run; the output of
 * every copy is compared with the source (a mismatch aborts). Printed:
 * MiB/s per run and the median of the per-run ratios (ours / QEMU's; above
 * 1 means blocklayer is faster). The image holds random data in three of
 * every four 16 MiB stripes, holes in the fourth, so block status matters.
 * Servers are started before the clock and stopped after it. Our daemon
 * runs compiled from the current sources (as bench/backup.ts does), or
 * under tsx with --tsx.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { compileOurs, median, ROOT, type Side } from './daemon-runs.js';

const run = promisify(execFile);
const STRIPE = 16 << 20;

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    'size-mib': { type: 'string', default: '1024' },
    dir: { type: 'string', default: tmpdir() },
    tsx: { type: 'boolean', default: false },
  },
});
const RUNS = Number(values.runs);
const SIZE = Number(values['size-mib']) * 2 ** 20;


/** Random data in three of every four stripes; the fourth stays a hole. */
async function sourceImage(path: string): Promise<void> {
  const file = await open(path, 'w');
  await file.truncate(SIZE);
  const chunk = Buffer.alloc(STRIPE);
  for (let offset = 0, i = 0; offset < SIZE; offset += STRIPE, i++) {
    if (i % 4 === 3) continue;
    const piece = chunk.subarray(0, Math.min(STRIPE, SIZE - offset));
    randomFillSync(piece);
    await file.write(piece, 0, piece.length, offset);
  }
  await file.close();
}

async function waitForSocket(path: string, child?: ChildProcess): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    if ((await stat(path).catch(() => undefined))?.isSocket()) return;
    if (child !== undefined && child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no socket at ${path}`);
}

interface Server {
  uri: string;
  stop(): Promise<void>;
}

/** Our daemon exporting the image read-only as `exp`. */
async function ourServer(dir: string, image: string, cli: string): Promise<Server> {
  const socket = join(dir, 'ours.sock');
  const entry = values.tsx ? ['--import', 'tsx', join(ROOT, 'bin', 'blocklayer.ts')] : [cli];
  const child = spawn(process.execPath, [
    ...entry, 'daemon',
    '--blockdev', `driver=file,node-name=f0,filename=${image},read-only=on`,
    '--blockdev', 'driver=raw,node-name=src,file=f0,read-only=on',
    '--nbd-server', `addr.type=unix,addr.path=${socket}`,
    '--export', 'type=nbd,id=exp,node-name=src,name=exp',
  ], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((r) => child.once('exit', r));
  await waitForSocket(socket, child);
  return {
    uri: `nbd+unix:///exp?socket=${socket}`,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** qemu-nbd exporting the image read-only as `exp`, several clients at once (so multi-conn is advertised). */
async function qemuServer(dir: string, image: string): Promise<Server> {
  const socket = join(dir, 'qemu.sock');
  const pidfile = join(dir, 'qemu.pid');
  await run('qemu-nbd', ['-r', '-f', 'raw', '-x', 'exp', `--socket=${socket}`, '--persistent', '--shared=8', '--fork', `--pid-file=${pidfile}`, image]);
  const pid = Number((await readFile(pidfile, 'utf8')).trim());
  return {
    uri: `nbd+unix:///exp?socket=${socket}`,
    stop: async () => {
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 400 && (await stat(`/proc/${pid}`).catch(() => undefined)) !== undefined; i++) await new Promise((r) => setTimeout(r, 25));
    },
  };
}

/** MiB/s of `body`. */
async function timed(body: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await body();
  return SIZE / 2 ** 20 / (Number(process.hrtime.bigint() - start) / 1e9);
}

/** Aborts unless `out` holds exactly the source's bytes. */
async function verify(source: string, out: string, what: string): Promise<void> {
  const [a, b] = await Promise.all([open(source), open(out)]);
  try {
    if ((await b.stat()).size !== SIZE) throw new Error(`${what}: output has ${(await b.stat()).size} bytes, not ${SIZE}`);
    const x = Buffer.alloc(STRIPE);
    const y = Buffer.alloc(STRIPE);
    for (let offset = 0; offset < SIZE; offset += STRIPE) {
      await Promise.all([a.read(x, 0, STRIPE, offset), b.read(y, 0, STRIPE, offset)]);
      if (!x.equals(y)) throw new Error(`${what}: output differs from the source near offset ${offset}`);
    }
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
  await rm(out, { force: true });
}

/** Our `convert` copying the export into a new raw file, as `qemu-img convert` does (block status first, then reads in flight). */
async function ourConvert(cli: string, uri: string, out: string): Promise<void> {
  const entry = values.tsx ? ['--import', 'tsx', join(ROOT, 'bin', 'blocklayer.ts')] : [cli];
  await run(process.execPath, [...entry, 'convert', '-f', 'raw', '-O', 'raw', uri, out], { cwd: ROOT });
}

function report(title: string, rows: Record<Side, number>[], labels: Record<Side, string>): void {
  console.log(title);
  rows.forEach((r, i) =>
    console.log(`  run ${i + 1}  ${labels.ours} ${r.ours.toFixed(0).padStart(6)} MiB/s  ${labels.qemu} ${r.qemu.toFixed(0).padStart(6)} MiB/s  ratio ${(r.ours / r.qemu).toFixed(2)}`),
  );
  const med = (side: Side) => median(rows.map((r) => r[side])).toFixed(0).padStart(6);
  console.log(`  median ${labels.ours} ${med('ours')} MiB/s  ${labels.qemu} ${med('qemu')} MiB/s  ratio ${median(rows.map((r) => r.ours / r.qemu)).toFixed(2)} (median of the per-run ratios)`);
}

const dir = await mkdtemp(join(values.dir, 'blocklayer-bench-nbd-'));
try {
  const cli = values.tsx ? '' : await compileOurs(dir);
  const image = join(dir, 'src.raw');
  await sourceImage(image);
  await run('sync');
  console.log(`NBD, ${SIZE / 2 ** 20} MiB image (random data, every fourth 16 MiB stripe a hole), ${RUNS} alternating runs; our daemon ${values.tsx ? 'under tsx' : 'compiled'}`);
  const out = join(dir, 'out.raw');

  const serverRows: Record<Side, number>[] = [];
  for (let i = 1; i <= RUNS; i++) {
    const row: Partial<Record<Side, number>> = {};
    for (const side of (i % 2 === 1 ? ['ours', 'qemu'] : ['qemu', 'ours']) as Side[]) {
      const server = side === 'ours' ? await ourServer(dir, image, cli) : await qemuServer(dir, image);
      try {
        row[side] = await timed(() => run('nbdcopy', [server.uri, out]));
      } finally {
        await server.stop();
      }
      await verify(image, out, `nbdcopy from ${side}`);
    }
    serverRows.push(row as Record<Side, number>);
  }
  report('server: nbdcopy out of the export into a file', serverRows, { ours: 'blocklayer daemon', qemu: 'qemu-nbd' });

  const qemu = await qemuServer(dir, image);
  try {
    const clientRows: Record<Side, number>[] = [];
    for (let i = 1; i <= RUNS; i++) {
      const row: Partial<Record<Side, number>> = {};
      for (const side of (i % 2 === 1 ? ['ours', 'qemu'] : ['qemu', 'ours']) as Side[]) {
        await rm(out, { force: true });
        row[side] = await timed(() =>
          side === 'ours' ? ourConvert(cli, qemu.uri, out) : run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', qemu.uri, out]),
        );
        await verify(image, out, `client copy by ${side}`);
      }
      clientRows.push(row as Record<Side, number>);
    }
    report('client: copy out of qemu-nbd into a file', clientRows, { ours: 'blocklayer convert', qemu: 'qemu-img convert' });
  } finally {
    await qemu.stop();
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
