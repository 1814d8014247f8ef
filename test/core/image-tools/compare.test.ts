/** compareImages against `qemu-img compare`: identical, different, different sizes, strict; and through backing chains. */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { ImageCreator } from '../../../core/block/image-creator.js';
import { compareImages, type CompareOutcome } from '../../../core/image-tools/compare.js';
import { ImageToolError, withImage } from '../../../core/image-tools/image-access.js';
import { TOKENS } from '../../../core/tokens.js';
import { requirePeer } from '../../helpers/peers.js';
import { COW_CLUSTER, cowImages, tempDir, toolLayer } from './cow-driver.js';

const run = promisify(execFile);

async function ours(layer: BlockLayer, a: string, b: string, strict = false, formats = ['raw', 'raw']): Promise<CompareOutcome> {
  return withImage(layer, { filename: a, format: formats[0]! }, { readOnly: true, exitCode: 2 }, (na) =>
    withImage(layer, { filename: b, format: formats[1]! }, { readOnly: true, exitCode: 2 }, (nb) =>
      compareImages({ node: na, filename: a }, { node: nb, filename: b }, { strict }),
    ),
  );
}

async function theirs(a: string, b: string, strict = false): Promise<{ exitCode: number; stdout: string }> {
  const args = ['compare', '-f', 'raw', '-F', 'raw', ...(strict ? ['-s'] : []), a, b];
  try {
    const { stdout } = await run('qemu-img', args);
    return { exitCode: 0, stdout };
  } catch (error) {
    const e = error as { code: number; stdout: string };
    return { exitCode: e.code, stdout: e.stdout };
  }
}

async function raw(dir: string, name: string, size: string, ...writes: string[]): Promise<string> {
  const path = join(dir, name);
  await run('qemu-img', ['create', '-f', 'raw', path, size]);
  if (writes.length > 0) await run('qemu-io', ['-f', 'raw', ...writes.flatMap((w) => ['-c', w]), path]);
  return path;
}

test('outcomes, lines and exit codes are qemu-img compare\'s', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const a = await raw(dir, 'a.raw', '4M', 'write -P 7 1M 64k');
  const same = await raw(dir, 'same.raw', '4M', 'write -P 7 1M 64k');
  const oneByte = await raw(dir, 'one.raw', '4M', 'write -P 7 1M 64k', 'write -P 1 1000 1');
  const changed = await raw(dir, 'changed.raw', '4M', 'write -P 8 1M 64k');
  const longer = await raw(dir, 'longer.raw', '6M', 'write -P 7 1M 64k');
  const longerData = await raw(dir, 'longer-data.raw', '6M', 'write -P 7 1M 64k', 'write -P 1 5000000 1');
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const cases: [string, string, boolean][] = [
    [a, same, false],
    [a, oneByte, false],
    [oneByte, a, false],
    [a, changed, false],
    [a, longer, false],
    [longer, a, false],
    [a, longerData, false],
    [longerData, a, false],
    [a, longer, true],
    [a, same, true],
  ];
  for (const [x, y, strict] of cases) {
    const expected = await theirs(x, y, strict);
    const outcome = await ours(layer, x, y, strict);
    const label = `${x} ${y}${strict ? ' -s' : ''}`;
    t.is(outcome.exitCode as number, expected.exitCode, label);
    t.is(outcome.lines.map((l) => `${l}\n`).join(''), expected.stdout, label);
  }
});

test('an image that cannot be opened is exit code 2, with qemu-img\'s message', async (t) => {
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const missing = join(dir, 'missing.raw');
  const error = await t.throwsAsync(ours(layer, missing, missing), { instanceOf: ImageToolError });
  t.is(error?.message, `Could not open '${missing}': Could not open '${missing}': No such file or directory`);
  t.is(error?.exitCode, 2);
});

test('through a chain: what an overlay leaves unallocated is compared with its backing file; one-sided allocation must be zeroes', async (t) => {
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const creator = layer.container.get<ImageCreator>(TOKENS.ImageCreator);
  const C = COW_CLUSTER;
  const base = join(dir, 'base.raw');
  const top = join(dir, 'top.cow');
  const flat = join(dir, 'flat.raw');
  await creator.create('raw', { filename: base, size: 8 * C });
  await creator.create('raw', { filename: flat, size: 8 * C });
  await creator.create('cow', { filename: top, size: 8 * C, backing_file: 'base.raw', backing_fmt: 'raw' });
  t.teardown(() => void cowImages.delete(top));
  await withImage(layer, { filename: base, format: 'raw' }, { readOnly: false }, (node) => node.write(C, Buffer.alloc(C, 5)));
  await withImage(layer, { filename: flat, format: 'raw' }, { readOnly: false }, async (node) => {
    await node.write(C, Buffer.alloc(C, 5));
    await node.write(3 * C, Buffer.alloc(C, 6));
  });
  await withImage(layer, { filename: top, format: 'cow' }, { readOnly: false }, async (node) => {
    await node.write(3 * C, Buffer.alloc(C, 6));
    await node.write(5 * C, Buffer.alloc(C, 0));
  });
  t.deepEqual(await ours(layer, top, flat, false, ['cow', 'raw']), { exitCode: 0, lines: ['Images are identical.'] });
  t.is((await ours(layer, top, flat, true, ['cow', 'raw'])).exitCode, 1, 'strict: block status differs');
  await withImage(layer, { filename: top, format: 'cow' }, { readOnly: false }, (node) => node.write(6 * C + 512, Buffer.alloc(512, 1)));
  t.deepEqual(await ours(layer, top, flat, false, ['cow', 'raw']), { exitCode: 1, lines: [`Content mismatch at offset ${6 * C + 512}!`] });
});
