/**
 * QEMU as the oracle: a quorum of three qcow2 files written through
 * blocklayer leaves three images qemu-img finds identical, clean, and
 * holding what was written (read back by qemu-io, through QEMU's own quorum
 * too); a replica qemu-io corrupted is outvoted and, with
 * rewrite-corrupted, repaired until qemu-img compares it equal again.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { createTestLayer } from '../../../core/testing/index.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';

const MiB = 1 << 20;

function qemu(tool: 'qemu-img' | 'qemu-io', ...args: string[]): string {
  try {
    return execFileSync(tool, args, { encoding: 'utf8' }).trim();
  } catch (error) {
    return `${(error as { stdout?: string }).stdout ?? ''}${(error as Error).message}`.trim();
  }
}

async function replicas(t: ExecutionContext): Promise<string[] | undefined> {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return undefined;
  const dir = await tempDir(t, 'blocklayer-quorum-');
  const paths = [0, 1, 2].map((i) => join(dir, `img${i}.qcow2`));
  for (const path of paths) qemu('qemu-img', 'create', '-q', '-f', 'qcow2', path, '4M');
  return paths;
}

const child = (path: string, i: number) => ({ driver: 'qcow2', 'node-name': `img${i}`, file: { driver: 'file', filename: path } });

/** qemu-io `read -P` of each region, through `image` (a json: filename names its own driver); '' when all match. */
function verify(image: string, regions: [number, number, number][]): string {
  const format = image.startsWith('json:') ? [] : ['-f', 'qcow2'];
  const failures = regions
    .map(([pattern, offset, bytes]) => qemu('qemu-io', ...format, '-r', '-c', `read -P ${pattern} ${offset} ${bytes}`, image))
    .filter((out) => !out.startsWith('read '));
  return failures.join('\n');
}

const WRITTEN: [number, number, number][] = [
  [0x11, 0, 65536],
  [0x00, 65536, 65536],
  [0x22, 65536 * 2, 3 * 65536 + 512],
  [0x00, 2 * MiB, 512],
  [0x33, 3 * MiB + 1024, 7],
];

test('writes through the quorum leave three identical, clean images holding the data', async (t) => {
  const paths = await replicas(t);
  if (paths === undefined) return;
  const layer = await createTestLayer({ plugins: ['file', 'qcow2', 'quorum'] });
  const q = await layer.graph.add({ driver: 'quorum', 'node-name': 'q', 'vote-threshold': 2, children: paths.map(child) });
  for (const [pattern, offset, bytes] of WRITTEN) await q.write(offset, Buffer.alloc(bytes, pattern));
  await q.write(2 * MiB, Buffer.alloc(4096, 0x44));
  await q.writeZeroes(2 * MiB, 512);
  await q.flush();
  await layer.close();
  for (const path of paths.slice(1)) t.is(qemu('qemu-img', 'compare', '-f', 'qcow2', '-F', 'qcow2', paths[0]!, path), 'Images are identical.');
  for (const path of paths) t.is(qemu('qemu-img', 'check', '-q', '-f', 'qcow2', path), '', `qemu-img check ${path}`);
  t.is(verify(paths[2]!, WRITTEN), '');
  const quorum = `json:${JSON.stringify({ driver: 'quorum', 'vote-threshold': 3, children: paths.map((p) => ({ driver: 'qcow2', file: { driver: 'file', filename: p } })) })}`;
  t.is(verify(quorum, WRITTEN), '', "QEMU's quorum reads it back");
});

test('a replica qemu-io corrupted is outvoted, then repaired with rewrite-corrupted', async (t) => {
  const paths = await replicas(t);
  if (paths === undefined) return;
  for (const path of paths) qemu('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', path);
  qemu('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x66 512k 4k', paths[1]!);
  t.not(qemu('qemu-img', 'compare', '-f', 'qcow2', '-F', 'qcow2', paths[0]!, paths[1]!), 'Images are identical.');

  const layer = await createTestLayer({ plugins: ['file', 'qcow2', 'quorum'] });
  const events: unknown[] = [];
  layer.hooks.event.tap('test', (e) => void events.push({ event: e.event, ...e.data }));
  const q = await layer.graph.add({ driver: 'quorum', 'node-name': 'q', 'vote-threshold': 2, 'rewrite-corrupted': true, children: paths.map(child) });
  const buf = Buffer.alloc(MiB);
  await q.read(0, buf);
  t.true(buf.every((b) => b === 0x5a), 'the majority wins');
  t.deepEqual(events, [{ event: 'QUORUM_REPORT_BAD', type: 'read', 'node-name': 'img1', 'sector-num': 0, 'sectors-count': 2048 }]);
  await layer.close();
  for (const path of paths.slice(1)) t.is(qemu('qemu-img', 'compare', '-f', 'qcow2', '-F', 'qcow2', paths[0]!, path), 'Images are identical.');
  t.is(qemu('qemu-img', 'check', '-q', '-f', 'qcow2', paths[1]!), '');
});
