/**
 * blockdev-create through the TypeScript API (`layer.execute`): a file,
 * then qcow2 formatted onto its node, with QEMU's job events and
 * query-jobs; the node stays usable (qcow2 opens on it, guest data goes
 * through); the result is byte for byte what `qemu-img create` writes for
 * the same options, and `qemu-img check` / `qemu-img info` accept it.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { BlockLayerEvent as QmpEvent } from '../../../core/hooks/block-layer-hooks.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const PLUGINS = ['file', 'raw', 'qcow2', 'null-co', 'qmp-block-commands', 'job-commands', 'blockdev-create'];

interface Layer {
  layer: BlockLayer;
  events: QmpEvent[];
}

async function newLayer(t: { teardown(fn: () => Promise<void>): void }): Promise<Layer> {
  const layer = await createTestLayer({ plugins: PLUGINS });
  t.teardown(() => layer.close());
  const events: QmpEvent[] = [];
  layer.hooks.event.tap('test', (event) => void events.push(event));
  return { layer, events };
}

/** The job's status changes and other job events so far, in order. */
function jobEvents(events: readonly QmpEvent[], id: string): string[] {
  return events
    .filter((e) => e.data?.id === id || e.data?.device === id)
    .map((e) => (e.event === 'JOB_STATUS_CHANGE' ? String(e.data!.status) : e.event));
}

/** Runs blockdev-create and resolves with query-jobs' entry once the job has concluded. */
async function create(layer: BlockLayer, id: string, options: Record<string, unknown>): Promise<Record<string, unknown>> {
  await layer.execute('blockdev-create', { 'job-id': id, options });
  for (;;) {
    const jobs = await layer.execute<Record<string, unknown>[]>('query-jobs');
    const job = jobs.find((j) => j.id === id);
    if (job?.status === 'concluded') return job;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A file, formatted as qcow2 with `options` through its node `node`, the node left open. */
async function createQcow2(layer: BlockLayer, path: string, node: string, options: Record<string, unknown>): Promise<Record<string, unknown>> {
  await create(layer, `${node}-file`, { driver: 'file', filename: path, size: 0 });
  await layer.execute('job-dismiss', { id: `${node}-file` });
  await layer.execute('blockdev-add', { driver: 'file', 'node-name': node, filename: path });
  const job = await create(layer, `${node}-qcow2`, { driver: 'qcow2', file: node, ...options });
  await layer.execute('job-dismiss', { id: `${node}-qcow2` });
  return job;
}

test('a file, then qcow2 on its node: QEMU events and query-jobs; qcow2 opens on the node; qemu-img accepts it', async (t) => {
  const dir = await tempDir(t, 'blocklayer-bdc-');
  const { layer, events } = await newLayer(t);
  const path = join(dir, 'a.qcow2');

  const fileJob = await create(layer, 'c0', { driver: 'file', filename: path, size: 0 });
  t.deepEqual(fileJob, { id: 'c0', type: 'create', status: 'concluded', 'current-progress': 1, 'total-progress': 1 });
  t.deepEqual(await layer.execute('query-block-jobs'), [], 'a create job is no block job');
  await t.throwsAsync(layer.execute('block-job-dismiss', { id: 'c0' }), { message: "Block job 'c0' not found" });
  await layer.execute('job-dismiss', { id: 'c0' });
  t.deepEqual(jobEvents(events, 'c0'), ['created', 'running', 'waiting', 'pending', 'concluded', 'null']);
  t.deepEqual(await layer.execute('query-jobs'), []);

  await layer.execute('blockdev-add', { driver: 'file', 'node-name': 'f0', filename: path });
  const qcow2Job = await create(layer, 'c1', { driver: 'qcow2', file: 'f0', size: 64 * MiB });
  t.is(qcow2Job.error, undefined);
  await layer.execute('job-dismiss', { id: 'c1' });
  t.deepEqual(jobEvents(events, 'c1'), ['created', 'running', 'waiting', 'pending', 'concluded', 'null']);
  t.is(layer.graph.node('f0')!.parents.size, 0, 'the job let go of the node');

  await layer.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'q0', file: 'f0' });
  const q0 = layer.graph.node('q0')!;
  t.is(q0.length, 64 * MiB);
  await q0.write(MiB, Buffer.alloc(64 * 1024, 0x5a));
  await layer.close();

  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const check = await run('qemu-img', ['check', '-f', 'qcow2', path]);
  t.is(check.stdout, 'No errors were found on the image.\n1/1024 = 0.10% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 393216\n');
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', path])).stdout) as Record<string, unknown>;
  t.like(info, { 'virtual-size': 64 * MiB, format: 'qcow2', 'cluster-size': 65536, 'dirty-flag': false });
  const read = await run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x5a 1M 64k', '-c', 'read -P 0 0 1M', path]);
  t.notRegex(read.stdout, /Pattern verification failed/);
});

/** blockdev-create options and the `qemu-img create -o` options that make the same image. */
const SAME_AS_QEMU_IMG: [string, Record<string, unknown>, string[]][] = [
  ['defaults', { size: 64 * MiB }, ['64M']],
  ['v2, 4 KiB clusters', { size: 64 * MiB, version: 'v2', 'cluster-size': 4096 }, ['-o', 'compat=0.10,cluster_size=4096', '64M']],
  [
    'lazy refcounts, 64-bit refcounts, metadata preallocation, 2 MiB clusters',
    { size: 256 * MiB, 'lazy-refcounts': true, 'refcount-bits': 64, preallocation: 'metadata', 'cluster-size': 2 * MiB },
    ['-o', 'lazy_refcounts=on,refcount_bits=64,preallocation=metadata,cluster_size=2M', '256M'],
  ],
  [
    'a backing file with its format',
    { size: MiB, 'backing-file': 'base.raw', 'backing-fmt': 'raw' },
    ['-u', '-o', 'backing_file=base.raw,backing_fmt=raw', '1M'],
  ],
  [
    '1-bit refcounts, 512-byte clusters, the defaults spelled out',
    { size: MiB, 'refcount-bits': 1, 'cluster-size': 512, 'compression-type': 'zlib', 'extended-l2': false, version: 'v3' },
    ['-o', 'refcount_bits=1,cluster_size=512,compression_type=zlib,extended_l2=off,compat=1.1', '1M'],
  ],
];

test('qcow2: byte for byte what qemu-img create writes, and qemu-img check finds no errors', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'blocklayer-bdc-');
  const { layer } = await newLayer(t);
  await run('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'base.raw'), '1M']);
  for (const [i, [what, options, qemuImgArgs]] of SAME_AS_QEMU_IMG.entries()) {
    const ours = join(dir, `ours${i}.qcow2`);
    const theirs = join(dir, `theirs${i}.qcow2`);
    const job = await createQcow2(layer, ours, `n${i}`, options);
    t.is(job.error, undefined, what);
    await layer.execute('blockdev-del', { 'node-name': `n${i}` });
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...qemuImgArgs.slice(0, -1), theirs, qemuImgArgs.at(-1)!]);
    t.true((await readFile(ours)).equals(await readFile(theirs)), `${what}: the same bytes as qemu-img create`);
    const check = await run('qemu-img', ['check', '-f', 'qcow2', ours]);
    t.regex(check.stdout, /^No errors were found on the image\./, what);
  }
});

test('a file reference given as options is opened for the creation and closed after it', async (t) => {
  const dir = await tempDir(t, 'blocklayer-bdc-');
  const { layer } = await newLayer(t);
  const path = join(dir, 'b.qcow2');
  await create(layer, 'c0', { driver: 'file', filename: path, size: 0 });
  const before = layer.graph.list().length;
  const job = await create(layer, 'c1', { driver: 'qcow2', file: { driver: 'file', filename: path }, size: MiB });
  t.is(job.error, undefined);
  t.is(layer.graph.list().length, before, 'no node is left behind');
  await layer.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'q', file: { driver: 'file', filename: path } });
  t.is(layer.graph.node('q')!.length, MiB);
});

test('the job is the user of the node it formats until it ends', async (t) => {
  const dir = await tempDir(t, 'blocklayer-bdc-');
  const { layer } = await newLayer(t);
  const path = join(dir, 'c.qcow2');
  await create(layer, 'c0', { driver: 'file', filename: path, size: 0 });
  await layer.execute('blockdev-add', { driver: 'file', 'node-name': 'f0', filename: path });
  const f0 = layer.graph.node('f0')!;
  // Hold the creation's first write until the node has been found in use.
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let reached!: () => void;
  const writing = new Promise<void>((resolve) => (reached = resolve));
  f0.hooks.beforeWrite.tapPromise('test', async () => {
    reached();
    await held;
    return undefined;
  });
  await layer.execute('blockdev-create', { 'job-id': 'c1', options: { driver: 'qcow2', file: 'f0', size: MiB } });
  await writing;
  await t.throwsAsync(layer.execute('blockdev-del', { 'node-name': 'f0' }), { message: /^Node 'f0' is busy/ });
  release();
  for (;;) {
    const [job] = await layer.execute<Record<string, unknown>[]>('query-jobs');
    if (job?.id === 'c1' && job.status === 'concluded') {
      t.is(job.error, undefined);
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await layer.execute('blockdev-del', { 'node-name': 'f0' });
});

test('errors come back as QEMU words them: before the job (GenericError) and as the job error', async (t) => {
  const dir = await tempDir(t, 'blocklayer-bdc-');
  const { layer } = await newLayer(t);
  const fail = (options: Record<string, unknown>, id = 'e') => layer.execute('blockdev-create', { 'job-id': id, options });
  await t.throwsAsync(fail({ driver: 'raw' }), { message: 'Driver does not support blockdev-create', instanceOf: Error });
  const error: unknown = await fail({ driver: 'null-co' }).catch((e: unknown) => e);
  t.is((error as { errorClass?: string }).errorClass, 'GenericError');
  await t.throwsAsync(fail({ driver: 'vmdk' }), { message: "Parameter 'driver' does not accept value 'vmdk'" });
  await t.throwsAsync(fail({ driver: 'qcow2', file: 'f', size: 'x' }), { message: "Parameter 'options.size' expects uint64" });
  await t.throwsAsync(fail({ driver: 'file', filename: join(dir, 'x'), size: 0 }, '0a'), { message: "Invalid job ID '0a'" });
  t.deepEqual(await layer.execute('query-jobs'), [], 'no job was made');
  const job = await create(layer, 'e1', { driver: 'qcow2', file: 'nosuch', size: MiB });
  t.is(job.error, "Cannot find device='nosuch' nor node-name='nosuch'");
});
