/**
 * I/O path overhead: the same request pattern through our file+raw nodes and
 * through `qemu-img bench -f raw`, on the same image, alternating, and the
 * median ratio (ours / QEMU's; above 1 means we are faster).
 *
 *   npx tsx bench/raw-io.ts [--runs 3] [--dir /tmp]
 *
 * Both sides use the host page cache (qemu-img -t writeback, thread pool
 * AIO); the image's first 256 MiB hold data, so reads are of data.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { BlockLayer } from '../core/block-layer.js';

const run = promisify(execFile);

interface Scenario {
  name: string;
  write: boolean;
  size: number;
  depth: number;
  count: number;
}

const SCENARIOS: Scenario[] = [
  { name: '4k read  QD1 ', write: false, size: 4096, depth: 1, count: 100_000 },
  { name: '64k read QD16', write: false, size: 65536, depth: 16, count: 40_000 },
  { name: '4k write QD1 ', write: true, size: 4096, depth: 1, count: 100_000 },
  { name: '64k write QD16', write: true, size: 65536, depth: 16, count: 40_000 },
];

const SPAN = 256 << 20;

async function qemuSide(image: string, s: Scenario): Promise<number> {
  const args = ['bench', '-f', 'raw', '-t', 'writeback', '-i', 'threads', '-c', String(s.count), '-d', String(s.depth)];
  args.push('-s', String(s.size), '-S', String(s.size), ...(s.write ? ['-w'] : []), image);
  const { stdout } = await run('qemu-img', args);
  const seconds = Number(/Run completed in ([\d.]+) seconds/.exec(stdout)?.[1]);
  return s.count / seconds;
}

/** The same pattern: `depth` requests in flight, sequential offsets of `size`, wrapping within SPAN. */
async function ourSide(image: string, s: Scenario): Promise<number> {
  const layer = await BlockLayer.create();
  await layer.execute('blockdev-add', { driver: 'raw', 'node-name': 'disk', file: { driver: 'file', filename: image } });
  const device = layer.graph.attachBackend('bench0', 'disk');
  let issued = 0;
  const worker = async (): Promise<void> => {
    const buf = Buffer.alloc(s.size, 0xa5);
    while (issued < s.count) {
      const offset = (issued++ * s.size) % SPAN;
      if (s.write) await device.write(offset, buf);
      else await device.read(offset, buf);
    }
  };
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: s.depth }, worker));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await layer.close();
  return s.count / seconds;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, dir: { type: 'string', default: tmpdir() } } });
const dir = await mkdtemp(join(values.dir, 'blocklayer-bench-'));
const image = join(dir, 'bench.raw');
await run('qemu-img', ['create', '-f', 'raw', image, '1G']);
await run('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a 0 ${SPAN}`, image]);
await run('sync');
console.log(`raw I/O, ${values.runs} alternating runs each, ops/s (median)`);
for (const scenario of SCENARIOS) {
  const ours: number[] = [];
  const qemu: number[] = [];
  for (let i = 0; i < Number(values.runs); i++) {
    qemu.push(await qemuSide(image, scenario));
    await run('sync');
    ours.push(await ourSide(image, scenario));
    await run('sync');
  }
  const [o, q] = [median(ours), median(qemu)];
  console.log(`${scenario.name}  blocklayer ${o.toFixed(0).padStart(8)}  qemu-img ${q.toFixed(0).padStart(8)}  ratio ${(o / q).toFixed(2)}`);
}
await rm(dir, { recursive: true, force: true });
