/** runBench: qemu-img bench's offsets, depth, pattern, flushes and failures, on a recording node. */
import test, { type ExecutionContext } from 'ava';
import {
  BENCH_DEFAULTS,
  type BenchOptions,
  benchHeader,
  benchSummary,
  checkAioMode,
  checkBenchOptions,
  checkCacheMode,
  runBench,
} from '../../../core/image-tools/bench.js';
import { ImageToolError } from '../../../core/image-tools/image-access.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { RecordingControl, recordingPlugin } from '../../helpers/recording-driver.js';

async function setup(t: ExecutionContext, size = 32768) {
  const control = new RecordingControl();
  const layer = await createTestLayer({ plugins: [recordingPlugin(control)] });
  t.teardown(() => layer.close());
  const node = await layer.graph.add({ driver: 'recording', 'node-name': 'disk', size });
  return { control, node };
}

const options = (more: Partial<BenchOptions>): BenchOptions => ({ ...BENCH_DEFAULTS, ...more });

test('requests step through the image from the offset and wrap at its end, depth at a time', async (t) => {
  const { control, node } = await setup(t);
  const { seconds } = await runBench(node, options({ count: 10, depth: 3, offset: 4096, step: 8192 }));
  t.true(seconds >= 0);
  const reads = control.calls.filter((c) => c.op === 'read');
  t.deepEqual(
    reads.map((c) => c.offset),
    [4096, 12288, 20480, 28672, 4096, 12288, 20480, 28672, 4096, 12288],
  );
  t.true(reads.every((c) => c.length === 4096));
  t.true(control.maxActive <= 3);
});

test('writes carry the pattern byte; the default step is the buffer size', async (t) => {
  const { control, node } = await setup(t);
  await runBench(node, options({ count: 4, depth: 2, bufferSize: 8192, write: true, pattern: 0xab }));
  t.deepEqual(control.calls.filter((c) => c.op === 'write').map((c) => c.offset), [0, 8192, 16384, 24576]);
  const back = Buffer.alloc(32768);
  await node.read(0, back);
  t.true(back.every((b) => b === 0xab));
});

test('a flush every N requests, after the requests in flight have drained', async (t) => {
  const { control, node } = await setup(t);
  let flushes = 0;
  let activeAtFlush = 0;
  const flush = node.flush.bind(node);
  node.flush = async (...args) => {
    flushes++;
    activeAtFlush = Math.max(activeAtFlush, control.active, node.requests.size);
    return flush(...args);
  };
  await runBench(node, options({ count: 100, depth: 4, write: true, flushInterval: 10 }));
  t.is(flushes, 10);
  t.is(activeAtFlush, 0);
  t.is(control.calls.filter((c) => c.op === 'write').length, 100);
});

test('a failed request ends the run: "Failed request: <strerror>"', async (t) => {
  const { node } = await setup(t);
  await t.throwsAsync(runBench(node, options({ count: 10, offset: 32768 })), {
    instanceOf: ImageToolError,
    message: 'Failed request: Input/output error',
  });
});

test('qemu-img\'s refusals and its report lines', (t) => {
  t.throws(() => checkBenchOptions(options({ flushInterval: 10 })), { message: '--flush-interval is only available in write tests' });
  t.throws(() => checkBenchOptions(options({ flushInterval: 10, write: true })), { message: "Flush interval can't be smaller than depth" });
  t.deepEqual(benchHeader(options({ count: 1000 })), [
    'Sending 1000 read requests, 4096 bytes each, 64 in parallel (starting at offset 0, step size 4096)',
  ]);
  t.deepEqual(benchHeader(options({ count: 100, depth: 4, write: true, bufferSize: 8192, step: 65536, offset: 4096, flushInterval: 10 })), [
    'Sending 100 write requests, 8192 bytes each, 4 in parallel (starting at offset 4096, step size 65536)',
    'Sending flush every 10 requests',
  ]);
  t.is(benchSummary(0.0081), 'Run completed in 0.008 seconds.');
});

test('-i threads only; -t writeback and none (which runs as writeback: no O_DIRECT here)', (t) => {
  t.notThrows(() => checkAioMode('threads'));
  t.throws(() => checkAioMode('native'), { message: 'aio=native is not supported: blocklayer does its I/O on a thread pool (-i threads)' });
  t.throws(() => checkAioMode('posix'), { message: 'Invalid aio option: posix' });
  t.notThrows(() => checkCacheMode('writeback'));
  t.notThrows(() => checkCacheMode('none'));
  t.throws(() => checkCacheMode('unsafe'), { message: "cache mode 'unsafe' is not supported: blocklayer accepts writeback and none" });
  t.throws(() => checkCacheMode('fast'), { message: 'Invalid cache option: fast' });
});
