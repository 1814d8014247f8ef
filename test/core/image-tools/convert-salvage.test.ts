/**
 * convert --salvage where block status fails (qemu-img's
 * convert_iteration_sectors: the range is asked again a quarter as long
 * until one sector alone fails, which is then read as data, with a
 * warning), and where reads fail (read again sector by sector, what still
 * fails copied as zeroes), over a format whose status and reads fail in
 * chosen ranges. Without --salvage the first failure stops the conversion
 * with qemu-img's message. The end-to-end comparison with qemu-img is
 * test/e2e/image-tools-convert-salvage.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ContainerModule } from 'inversify';
import test from 'ava';
import { BlockdevRef } from '../../../core/block/blockdev-ref.js';
import { defineBlockDriver } from '../../../core/block/driver.js';
import type { NodeChild } from '../../../core/block/node-edge.js';
import { BlockIoError } from '../../../core/errors.js';
import { convertImage } from '../../../core/image-tools/convert.js';
import type { Plugin } from '../../../core/plugin/plugin.js';
import { Qapi } from '../../../core/schema/qapi.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';
import { tempDir } from './cow-driver.js';

const KiB = 1024;
const BAD_STATUS = [64 * KiB, 64 * KiB + 1024] as const;
const BAD_READ = [200 * KiB + 512, 200 * KiB + 1024] as const;
const overlaps = (offset: number, length: number, [from, to]: readonly [number, number]) => offset < to && offset + length > from;

/** raw over its file, except that block status fails over BAD_STATUS and reads over BAD_READ (EIO). */
const flakyPlugin: Plugin = {
  name: 'flaky',
  version: '0.0.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.BlockDriverContribution).toConstantValue(
      defineBlockDriver<unknown, NodeChild>({
        name: 'flaky',
        kind: 'format',
        summary: 'test driver: raw with ranges whose status or data cannot be read',
        options: Qapi.struct('BlockdevOptionsFlaky', { file: BlockdevRef }),
        children: [{ name: 'file', required: true }],
        capabilities: { concurrency: 'parallel' },
        open: async ({ children }) => children.get('file')!,
        getLength: (file) => file.length,
        read: async (file, offset, buf) => {
          if (overlaps(offset, buf.length, BAD_READ)) throw new BlockIoError('EIO');
          await file.read(offset, buf);
        },
        blockStatus: async (file, offset, length) => {
          if (overlaps(offset, length, BAD_STATUS)) throw new BlockIoError('EIO');
          return file.blockStatus(offset, length);
        },
      }),
    );
  }),
};

test('salvaging, failed block status is asked again down to single sectors, failed reads come back as zeroes', async (t) => {
  const dir = await tempDir(t);
  const layer = await createTestLayer({ plugins: ['file', 'raw', flakyPlugin] });
  t.teardown(() => layer.close());
  const data = randomBytes(256 * KiB);
  await writeFile(join(dir, 'src.img'), data);
  const source = { filename: join(dir, 'src.img'), format: 'flaky' };
  const warnings: string[] = [];
  await convertImage(layer, { source, target: { filename: join(dir, 'out.raw'), format: 'raw' }, salvage: true }, undefined, (w) => warnings.push(w));
  t.deepEqual(warnings, [
    'error while reading block status at offset 65536: Input/output error',
    'error while reading block status at offset 66048: Input/output error',
    'error while reading offset 205312: Input/output error',
  ]);
  const expected = Buffer.from(data);
  expected.fill(0, BAD_READ[0], BAD_READ[1]);
  t.true((await readFile(join(dir, 'out.raw'))).equals(expected), 'everything else copied');

  const quiet: string[] = [];
  await convertImage(layer, { source, target: { filename: join(dir, 'quiet.raw'), format: 'raw' }, salvage: true, quiet: true }, undefined, (w) => quiet.push(w));
  t.deepEqual(quiet, []);

  await t.throwsAsync(convertImage(layer, { source, target: { filename: join(dir, 'x.raw'), format: 'raw' } }), {
    message: 'error while reading block status at offset 0: Input/output error',
  });
});
