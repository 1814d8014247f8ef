/**
 * The x-inject-error test filter (test/fixtures/error-filter), which the
 * backup transcript tests put where QEMU's used blkdebug: it fails the
 * first read or data write (every one with once=false) and passes the rest.
 */
import test from 'ava';
import { BlockIoError } from '../../../core/errors.js';
import { createTestLayer } from '../../../core/testing/index.js';
import errorFilter from '../../fixtures/error-filter/index.js';

async function filtered(options: Record<string, unknown>) {
  const layer = await createTestLayer({ plugins: [errorFilter] });
  const node = await layer.graph.add({ driver: 'x-inject-error', 'node-name': 'bad', image: { driver: 'memory', size: 1 << 20 }, ...options });
  return { layer, node };
}

test('event=write fails the first data write only, with the errno asked for', async (t) => {
  const { layer, node } = await filtered({ event: 'write', errno: 'ENOSPC' });
  t.is(node.length, 1 << 20);
  await node.writeZeroes(0, 65536);
  await node.read(0, Buffer.alloc(512));
  const error = await t.throwsAsync(node.write(4096, Buffer.alloc(512, 0x11)), { instanceOf: BlockIoError });
  t.is(error?.errno, 'ENOSPC');
  t.is(error?.message, 'No space left on device');
  await node.write(4096, Buffer.alloc(512, 0x22));
  const back = Buffer.alloc(512);
  await node.read(4096, back);
  t.deepEqual(back, Buffer.alloc(512, 0x22));
  await layer.close();
});

test('event=read fails the first read; once=false fails every one', async (t) => {
  const first = await filtered({ event: 'read', errno: 'EIO' });
  await first.node.write(0, Buffer.alloc(512, 0x33));
  await t.throwsAsync(first.node.read(0, Buffer.alloc(512)), { instanceOf: BlockIoError, message: 'Input/output error' });
  await t.notThrowsAsync(first.node.read(0, Buffer.alloc(512)));
  await first.layer.close();

  const every = await filtered({ event: 'read', errno: 'EIO', once: false });
  for (let i = 0; i < 3; i++) await t.throwsAsync(every.node.read(0, Buffer.alloc(512)), { instanceOf: BlockIoError });
  await every.layer.close();
});

test('options are checked like any driver options', async (t) => {
  const layer = await createTestLayer({ plugins: [errorFilter] });
  await t.throwsAsync(layer.graph.add({ driver: 'x-inject-error', 'node-name': 'bad', image: { driver: 'memory', size: 4096 }, event: 'flush', errno: 'EIO' }));
  await t.throwsAsync(layer.graph.add({ driver: 'x-inject-error', 'node-name': 'bad', image: { driver: 'memory', size: 4096 }, event: 'read' }));
  await layer.close();
});
