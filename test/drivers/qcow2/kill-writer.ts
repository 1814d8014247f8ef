/**
 * The child process of kill.test.ts: opens a qcow2 image through the block
 * layer and runs a write-heavy workload until it is killed. Every request is
 * announced in the log file before it is issued (`B id kind offset length`)
 * and acknowledged after it completed (`D id`), with a write(2) each, which
 * the kill cannot undo (stdout to the parent is a socket that Node writes
 * asynchronously: lines still queued die with the process). stdout only
 * says `started` and copies the log lines, for the parent to time the kill.
 *
 * Kinds: w write, c compressed write (one whole cluster), z write-zeroes,
 * d discard (whole clusters), g grow (`offset` is the new size), f flush.
 * Up to four requests run at once on disjoint sectors; flushes and grows
 * wait for the requests before them and hold back the ones after. Written
 * data is `sectorPattern(id, sector)`, so the parent can tell which request
 * wrote each sector it reads back.
 *
 *   node --import=tsx test/drivers/qcow2/kill-writer.ts IMAGE LOG SEED MAX_SIZE
 */
import { openSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createTestLayer } from '../../../core/testing/index.js';
import { randomFloats } from '../../helpers/prng.js';

export const SECTOR = 512;

/** The bytes request `id` writes to sector `sector`: both numbers, then a filler made from them (compressible). */
export function sectorPattern(id: number, sector: number): Buffer {
  const buf = Buffer.alloc(SECTOR);
  buf.writeUInt32BE(id, 0);
  buf.writeUInt32BE(sector, 4);
  for (let at = 8; at < SECTOR; at += 4) buf.writeUInt32BE((Math.imul(id, 0x9e3779b1) ^ Math.imul(sector + at, 0x85ebca6b)) >>> 0, at);
  return buf;
}

async function main(image: string, log: string, seed: number, maxSize: number): Promise<void> {
  const layer = await createTestLayer({ plugins: ['qcow2', 'file'] });
  // No fdatasync: a killed process loses nothing the kernel has, so flushes only need to write the metadata back.
  const node = await layer.graph.add({
    driver: 'qcow2',
    'node-name': 'q',
    discard: 'unmap',
    file: { driver: 'file', filename: image, cache: { 'no-flush': true } },
  });
  const cs = (node.driverState as { g: { clusterSize: number } }).g.clusterSize;
  const rand = randomFloats(seed);
  const pick = (n: number) => Math.floor(rand() * n);
  const logFd = openSync(log, 'w');
  const say = (line: string) => {
    writeSync(logFd, `${line}\n`);
    process.stdout.write(`${line}\n`);
  };
  const busy = new Map<number, [number, number]>();
  // Clusters that may hold data: a compressed write can only go to one that does not (as in QEMU).
  const allocated = new Set<number>();
  let id = 0;

  const overlaps = (start: number, end: number) => [...busy.values()].some(([s, e]) => start < e && s < end);
  const run = async (kind: string, offset: number, length: number, request: () => Promise<void>) => {
    const me = ++id;
    busy.set(me, [offset, offset + length]);
    say(`B ${me} ${kind} ${offset} ${length}`);
    await request();
    busy.delete(me);
    say(`D ${me}`);
  };
  const data = (me: number, offset: number, length: number) => {
    const buf = Buffer.alloc(length);
    for (let at = 0; at < length; at += SECTOR) sectorPattern(me, (offset + at) / SECTOR).copy(buf, at);
    return buf;
  };

  process.stdout.write(`started ${node.length} ${cs}\n`);
  const inFlight = new Set<Promise<void>>();
  for (;;) {
    const roll = pick(100);
    if (roll < 4 || (roll < 6 && node.length < maxSize)) {
      // A barrier: the requests before it complete first.
      await Promise.all(inFlight);
      if (roll < 4) await run('f', 0, 0, () => node.flush());
      else {
        const size = Math.min(maxSize, node.length + (1 + pick(4)) * Math.max(cs, 1 << 20));
        await run('g', size, 0, () => node.truncate(size));
      }
      continue;
    }
    const clusters = node.length / cs;
    let kind: string;
    let offset: number;
    let length: number;
    if (roll < 14) {
      kind = 'c';
      offset = pick(clusters) * cs;
      length = cs;
      if (allocated.has(offset / cs)) continue;
    } else if (roll < 30) {
      kind = roll < 22 ? 'z' : 'd';
      const first = pick(clusters);
      offset = first * cs;
      length = Math.min(clusters - first, 1 + pick(8)) * cs;
      if (kind === 'z' && pick(2) === 0) {
        // Sector-aligned zeroes, partial clusters included.
        offset += pick(cs / SECTOR) * SECTOR;
        length = Math.max(SECTOR, length - pick(cs / SECTOR) * SECTOR - (offset % cs));
      }
    } else {
      kind = 'w';
      const sectors = node.length / SECTOR;
      offset = pick(sectors) * SECTOR;
      length = Math.min(sectors * SECTOR - offset, (1 + pick(pick(2) === 0 ? 16 : 512)) * SECTOR);
    }
    if (overlaps(offset, offset + length)) continue;
    for (let cluster = Math.floor(offset / cs); cluster < Math.ceil((offset + length) / cs); cluster++) {
      if (kind === 'd') allocated.delete(cluster);
      else allocated.add(cluster);
    }
    const me = id + 1;
    const request =
      kind === 'w' || kind === 'c'
        ? () => node.write(offset, data(me, offset, length), kind === 'c' ? { compressed: true } : {})
        : kind === 'z'
          ? () => node.writeZeroes(offset, length, { mayUnmap: pick(2) === 0 })
          : () => node.discard(offset, length);
    const done: Promise<void> = run(kind, offset, length, request).finally(() => inFlight.delete(done));
    inFlight.add(done);
    if (inFlight.size >= 4) await Promise.race(inFlight);
  }
}

// Run as a script (the parent imports sectorPattern and random from here).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [image, log, seed, maxSize] = process.argv.slice(2);
  main(image!, log!, Number(seed), Number(maxSize)).catch((error: unknown) => {
    process.stderr.write(`kill-writer: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
