/**
 * Killing the process (SIGKILL) at a random point of a write-heavy run
 * leaves an image that `qemu-img check` finds without corruptions (leaks
 * allowed), and our `check -r leaks` repairs it. Each round starts
 * kill-writer.ts on a fresh image (cluster sizes from 512 bytes to 1 MiB,
 * with and without lazy_refcounts=on) and kills it after a seeded delay.
 *
 * A lazy_refcounts image left dirty has refcounts that are too low by
 * design; `qemu-img check` reports those (and the OFLAG_COPIED lines that
 * follow from them) as corruptions, and only they are allowed; `-r all`
 * repairs it, as QEMU needs.
 *
 * Then the guest data is checked request by request, against what the
 * writer announced and acknowledged: a killed process keeps what the
 * kernel has, but the driver caches metadata until a flush (QEMU's
 * writeback semantics), so what the last completed flush covered must read
 * back exactly, and each sector written after it reads as one of the
 * values it had since (old or new, never anything else).
 *
 * The seed is printed; BLOCKLAYER_KILL_SEED=N replays the same requests
 * and delays (the kill lands wherever the machine's speed puts it).
 */
import { spawn } from 'node:child_process';
import { copyFile, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import test, { type ExecutionContext } from 'ava';
import { checkImage } from '../../../core/image-tools/check.js';
import { type Qcow2Fixture, qcow2Fixture, qemuCheck, readNode, requireQemu, run, runStatus, sameBytes } from './fixture.js';
import { randomFloats } from '../../helpers/prng.js';
import { SECTOR, sectorPattern } from './kill-writer.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const WRITER = fileURLToPath(new URL('./kill-writer.ts', import.meta.url));
const MiB = 1024 * 1024;
const START_SIZE = 16 * MiB;
const MAX_SIZE = 32 * MiB;

const SEED = Number(process.env.BLOCKLAYER_KILL_SEED ?? Math.floor(Math.random() * 2 ** 31));

const ROUNDS: { clusterSize: number; lazy: boolean }[] = [
  { clusterSize: 65536, lazy: false },
  { clusterSize: 4096, lazy: false },
  { clusterSize: 512, lazy: false },
  { clusterSize: 1 * MiB, lazy: false },
  { clusterSize: 65536, lazy: true },
  { clusterSize: 4096, lazy: true },
  { clusterSize: 16384, lazy: true },
  { clusterSize: 2 * MiB, lazy: true },
];

/** One request of the writer: `done` once acknowledged. */
interface Request {
  id: number;
  kind: string;
  offset: number;
  length: number;
  done: boolean;
}

/**
 * Runs the writer on `image` and kills it `delay` ms after it started, or
 * later if it has not announced `least` requests by then (a busy machine
 * slows it down); returns its requests.
 */
async function killWriter(t: ExecutionContext, image: string, seed: number, delay: number, least: number): Promise<Request[]> {
  const log = `${image}.log`;
  const child = spawn(process.execPath, ['--import=tsx', WRITER, image, log, String(seed), String(MAX_SIZE)], { cwd: ROOT });
  let stdout = '';
  let stderr = '';
  let started = false;
  let waited = false;
  let announced = 0;
  const kill = () => child.kill('SIGKILL');
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout.on('data', (chunk: Buffer) => {
    const text = chunk.toString();
    stdout += text;
    announced += text.split('\nB ').length - 1;
    if (!started && stdout.startsWith('started ')) {
      started = true;
      setTimeout(() => {
        waited = true;
        if (announced >= least) kill();
      }, delay);
    }
    if (waited && announced >= least) kill();
  });
  const [, signal] = (await new Promise((resolve) => child.once('close', (...args) => resolve(args)))) as [number | null, string | null];
  if (signal !== 'SIGKILL') throw new Error(`the writer ended by itself (${signal ?? 'exit'}): ${stderr}`);
  const requests = new Map<number, Request>();
  // Only whole lines count: the last one may have been cut by the kill.
  for (const line of (await readFile(log, 'utf8')).split('\n').slice(0, -1)) {
    const [what, id, kind, offset, length] = line.split(' ');
    if (what === 'B') requests.set(Number(id), { id: Number(id), kind: kind!, offset: Number(offset), length: Number(length), done: false });
    else requests.get(Number(id))!.done = true;
  }
  const list = [...requests.values()];
  t.log(`${list.length} requests, ${list.filter((r) => r.kind === 'f' && r.done).length} flushes completed`);
  return list;
}

/** What qemu-img check may find after a kill: leaks; and, on a dirty lazy-refcounts image, refcounts that are too low. */
function assertNoCorruption(t: ExecutionContext, code: number, stderr: string, dirty: boolean): void {
  if (!dirty) {
    t.true(code === 0 || code === 3, `qemu-img check exit code ${code}: ${stderr}`);
    return;
  }
  t.true(code === 0 || code === 2 || code === 3, `qemu-img check exit code ${code}: ${stderr}`);
  for (const line of stderr.split('\n').filter(Boolean)) {
    const low = /^ERROR cluster \d+ refcount=(\d+) reference=(\d+)$/.exec(line);
    const allowed =
      (low !== null && Number(low[1]) < Number(low[2])) ||
      /^Leaked cluster \d+ refcount=\d+ reference=\d+$/.test(line) ||
      /^ERROR OFLAG_COPIED (data|L2) cluster: .* refcount=\d+$/.test(line);
    t.true(allowed, `a dirty lazy-refcounts image may only have refcounts too low: ${line}`);
  }
}

/** Checks the guest data (`raw`, `size` bytes) against the requests, sector by sector. */
function assertData(t: ExecutionContext, requests: Request[], raw: Buffer): void {
  const byId = new Map(requests.map((r) => [r.id, r]));
  const flushed = requests.filter((r) => r.kind === 'f' && r.done).at(-1)?.id ?? 0;
  const grows = requests.filter((r) => r.kind === 'g');
  const durableSize = grows.filter((r) => r.id < flushed).at(-1)?.offset ?? START_SIZE;
  const sizes = [durableSize, ...grows.filter((r) => r.id > flushed).map((r) => r.offset)];
  t.true(sizes.includes(raw.length), `image size ${raw.length}: expected one of ${sizes.join(', ')}`);
  const history = new Map<number, number[]>();
  for (const r of requests) {
    if (r.kind === 'f' || r.kind === 'g') continue;
    for (let s = r.offset / SECTOR; s < (r.offset + r.length) / SECTOR; s++) history.set(s, [...(history.get(s) ?? []), r.id]);
  }
  const zero = Buffer.alloc(SECTOR);
  let bad = 0;
  for (let s = 0; s < raw.length / SECTOR && bad < 5; s++) {
    const ids = history.get(s) ?? [];
    // The value the last completed flush covered (0: never written), then every later one.
    const durable = ids.filter((id) => id < flushed).at(-1) ?? 0;
    const allowed = [durable, ...ids.filter((id) => id > flushed)];
    const sector = raw.subarray(s * SECTOR, (s + 1) * SECTOR);
    const zeroes = (id: number) => id === 0 || byId.get(id)!.kind === 'z' || byId.get(id)!.kind === 'd';
    const ok = sector.equals(zero)
      ? allowed.some(zeroes)
      : allowed.some((id) => !zeroes(id) && sector.equals(sectorPattern(id, s)));
    if (!ok) {
      bad++;
      const found = sector.equals(zero) ? 'zeroes' : `request ${sector.readUInt32BE(0)}'s data for sector ${sector.readUInt32BE(4)}`;
      t.fail(`sector ${s} (offset ${s * SECTOR}) holds ${found}; expected one of requests [${allowed.join(', ')}] (0 = never written)`);
    }
  }
  if (bad === 0) t.pass('every sector reads as expected');
}

/** Our check of `image`, repairing what `repair` allows: the JSON report and the lines on stderr. */
async function ourCheck(f: Qcow2Fixture, image: string, repair: 'none' | 'leaks' | 'all') {
  const readOnly = repair === 'none';
  const file = { driver: 'file', filename: image, discard: 'unmap', cache: { 'no-flush': true } };
  const node = await f.layer.graph.open({ driver: 'qcow2', file, 'read-only': readOnly }, { readOnly, check: true });
  try {
    return await checkImage(node, image, repair);
  } finally {
    await f.layer.graph.closeIfUnused(node);
  }
}

ROUNDS.forEach(({ clusterSize, lazy }, round) => {
  test(`SIGKILL during writes (cluster_size=${clusterSize}${lazy ? ', lazy_refcounts=on' : ''}): no corruption, repaired, flushed data intact`, async (t) => {
    if (!requireQemu(t)) return;
    const seed = (SEED + round) >>> 0;
    const pick = randomFloats(seed ^ 0x5eed);
    const delay = 100 + Math.floor(pick() * 500);
    const least = 50 + Math.floor(pick() * 400);
    t.log(`seed ${seed} (BLOCKLAYER_KILL_SEED=${SEED}): kill ${delay} ms after the start, once ${least} requests were announced`);
    const f = await qcow2Fixture(t);
    const image = f.path('killed.qcow2');
    const options = `cluster_size=${clusterSize}${lazy ? ',lazy_refcounts=on' : ''}`;
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, image, String(START_SIZE)]);
    const requests = await killWriter(t, image, seed, delay, least);

    const info = JSON.parse(await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', image])) as { 'dirty-flag': boolean };
    const dirty = info['dirty-flag'];
    const found = await runStatus('qemu-img', ['check', '--output=json', '-f', 'qcow2', image]);
    assertNoCorruption(t, found.code, found.stderr, dirty);
    const ours = await ourCheck(f, image, 'none');
    t.is(ours.exitCode as number, found.code, 'our check agrees with qemu-img check');
    t.deepEqual(ours.report, JSON.parse(found.stdout), 'our report is qemu-img check\'s');
    t.is(ours.messages.map((line) => `${line}\n`).join(''), found.stderr);

    const [before, qemus] = [f.path('before.qcow2'), f.path('qemu.qcow2')];
    await Promise.all([copyFile(image, before), copyFile(image, qemus)]);
    const repair = dirty ? 'all' : 'leaks';
    const repaired = await ourCheck(f, image, repair);
    t.is(repaired.exitCode, 0, `-r ${repair}: ${repaired.messages.join('\n')}`);
    const qemuRepair = await runStatus('qemu-img', ['check', '--output=json', '-r', repair, '-f', 'qcow2', qemus]);
    t.deepEqual({ ...repaired.report, filename: qemus }, JSON.parse(qemuRepair.stdout), `-r ${repair}: qemu-img's report`);
    t.is(repaired.messages.map((line) => `${line}\n`).join(''), qemuRepair.stderr, `-r ${repair}: qemu-img's messages`);
    sameBytes(t, await readFile(image), await readFile(qemus), `-r ${repair}: the file qemu-img repairs`);
    const after = await qemuCheck(image);
    t.is(after.code, 0, `qemu-img check after our -r ${repair}: ${JSON.stringify(after.report)}`);
    const compare = await runStatus('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', before, image]);
    t.is(compare.stdout, 'Images are identical.\n', 'the repair changed no guest data');

    const raw = f.path('guest.raw');
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, raw]);
    const data = await readFile(raw);
    assertData(t, requests, data);
    const node = await f.open(image, { 'read-only': true });
    sameBytes(t, await readNode(node), data, 'we read what qemu-img reads');
  });
});
