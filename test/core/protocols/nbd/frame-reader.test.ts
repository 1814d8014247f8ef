/** FrameReader: exact reads over arbitrary splits, bounded memory, end of stream, backpressure. */
import test from 'ava';
import fc from 'fast-check';
import { FrameReader, StreamEndedError } from '../../../../core/protocols/nbd/frame-reader.js';

test('reads are exact whatever the stream is cut into (property)', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ minLength: 1, maxLength: 300 }),
      fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 30 }),
      fc.array(fc.integer({ min: 1, max: 60 }), { minLength: 1, maxLength: 30 }),
      async (bytes, cuts, reads) => {
        const data = Buffer.from(bytes);
        const reader = new FrameReader();
        const out: Buffer[] = [];
        const consumer = (async () => {
          let left = data.length;
          for (let i = 0; left > 0; i++) {
            const n = Math.min(reads[i % reads.length]!, left);
            if (i % 3 === 0) out.push(await reader.read(n));
            else if (i % 3 === 1) {
              const target = Buffer.alloc(n);
              await reader.readInto(target);
              out.push(target);
            } else {
              await reader.skip(n);
              out.push(data.subarray(data.length - left, data.length - left + n));
            }
            left -= n;
          }
        })();
        for (let at = 0, i = 0; at < data.length; i++) {
          const n = cuts[i % cuts.length]!;
          reader.push(data.subarray(at, at + n));
          at += n;
          await Promise.resolve();
        }
        await consumer;
        return Buffer.concat(out).equals(data);
      },
    ),
  );
  t.pass();
});

test('a read larger than the limit is refused before anything is allocated; skips have no limit', async (t) => {
  const reader = new FrameReader({ maxRead: 1024 });
  await t.throwsAsync(reader.read(1025), { instanceOf: RangeError, message: 'read of 1025 bytes exceeds the limit of 1024' });
  await t.throwsAsync(reader.readInto(Buffer.alloc(2048)), { instanceOf: RangeError });
  const skip = reader.skip(10_000);
  for (let i = 0; i < 10; i++) reader.push(Buffer.alloc(1000));
  await skip;
  t.is(reader.buffered, 0);
});

test('the end of the stream fails a pending read, and later ones, but not data already there', async (t) => {
  const reader = new FrameReader();
  reader.push(Buffer.from('abc'));
  const pending = reader.read(5);
  reader.end();
  await t.throwsAsync(pending, { instanceOf: StreamEndedError, message: 'server closed the connection' });
  const other = new FrameReader();
  other.push(Buffer.from('abcdef'));
  other.end(new StreamEndedError('reset'));
  t.is((await other.read(6)).toString(), 'abcdef');
  await t.throwsAsync(other.read(1), { message: 'reset' });
  t.true(other.ended);
});

test('only one read at a time', async (t) => {
  const reader = new FrameReader();
  const first = reader.read(4);
  await t.throwsAsync(reader.read(1), { message: 'FrameReader: only one read at a time' });
  reader.push(Buffer.from('wxyz'));
  t.is((await first).toString(), 'wxyz');
});

test('backpressure: onFull past the high-water mark, onDrained once half of it is read', async (t) => {
  const events: string[] = [];
  const reader = new FrameReader({ highWaterMark: 100, onFull: () => events.push('full'), onDrained: () => events.push('drained') });
  reader.push(Buffer.alloc(60));
  reader.push(Buffer.alloc(60));
  reader.push(Buffer.alloc(60));
  t.deepEqual(events, ['full']);
  await reader.read(100);
  t.deepEqual(events, ['full']);
  await reader.read(40);
  t.deepEqual(events, ['full', 'drained']);
  t.is(reader.buffered, 40);
});

test('a large read goes straight into its target as data arrives, without piling up', async (t) => {
  let full = 0;
  const reader = new FrameReader({ highWaterMark: 16, onFull: () => full++ });
  const target = Buffer.alloc(1 << 20);
  const reading = reader.readInto(target);
  for (let i = 0; i < 256; i++) reader.push(Buffer.alloc(4096, i));
  await reading;
  t.is(reader.buffered, 0);
  t.is(target[4096 * 255], 255);
  t.is(full, 0, 'nothing was ever buffered past the high-water mark');
});
