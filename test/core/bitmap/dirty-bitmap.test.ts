/**
 * DirtyBitmap on its own (no node I/O): granules and counts as QEMU counts
 * them, dirty ranges clipped to the asked range, truncation, merges across
 * granularities (the numbers qemu-storage-daemon 7.2 gave for the same
 * bitmaps), backups that keep the writes made meanwhile, the busy and
 * inconsistent checks with QEMU's messages; and the ClusterBitmap range
 * operations underneath, against a plain array model.
 */
import test from 'ava';
import fc from 'fast-check';
import { ClusterBitmap } from '../../../core/bitmap/cluster-bitmap.js';
import { DirtyBitmap } from '../../../core/bitmap/dirty-bitmap.js';
import type { BlockNode } from '../../../core/block/block-node.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const node = {} as BlockNode;
const bitmap = (granularity: number, size: number, enabled = true) => new DirtyBitmap(node, 'b', granularity, { size, enabled });
const areas = (b: DirtyBitmap, start = 0, end = b.size) => [...b.dirtyAreas(start, end)].map((a) => [a.offset, a.length]);

test('a write marks every granule it touches; count is set bits × granularity, the short last granule counted whole', (t) => {
  const b = bitmap(64 * KiB, 4 * MiB + 1024);
  b.recordWrite(0, 1);
  b.recordWrite(70000, 1000);
  b.recordWrite(MiB, 64 * KiB);
  b.recordWrite(4 * MiB + 696, 304);
  t.is(b.count, 4 * 64 * KiB, 'qemu-storage-daemon: 262144 for these writes');
  t.deepEqual(areas(b), [[0, 128 * KiB], [MiB, 64 * KiB], [4 * MiB, 1024]]);
  const fine = bitmap(512, 4 * MiB + 1024);
  for (const [offset, bytes] of [[0, 1], [70000, 1000], [MiB, 64 * KiB], [4 * MiB + 696, 304]]) fine.recordWrite(offset!, bytes!);
  t.is(fine.count, 68096, 'qemu-storage-daemon: 68096 at 512-byte granularity');
  t.true(fine.isDirty(69632) && fine.isDirty(71167) && !fine.isDirty(71168) && !fine.isDirty(69631));
});

test('a disabled bitmap records nothing, setDirty marks anyway; enable and disable switch recording', (t) => {
  const b = bitmap(4 * KiB, MiB, false);
  b.recordWrite(0, 4096);
  t.is(b.count, 0);
  b.setDirty(8192, 1);
  t.is(b.count, 4096);
  b.enable();
  b.recordWrite(0, 1);
  t.is(b.count, 8192);
  b.disable();
  b.recordWrite(100 * KiB, 1);
  t.is(b.count, 8192);
  t.false(b.enabled);
});

test('dirty areas are clipped to the range asked for and to the bitmap', (t) => {
  const b = bitmap(64 * KiB, MiB);
  b.recordWrite(64 * KiB, 128 * KiB);
  b.recordWrite(MiB - 1, 1);
  t.deepEqual(areas(b, 100 * KiB, 150 * KiB), [[100 * KiB, 50 * KiB]]);
  t.deepEqual(areas(b, 0, 2 * MiB), [[64 * KiB, 128 * KiB], [MiB - 64 * KiB, 64 * KiB]]);
  t.deepEqual(areas(b, 200 * KiB, 900 * KiB), []);
  t.is(b.nextDirtyArea(MiB, 2 * MiB), undefined);
});

test('resetDirty clears whole granules only, the last one of the disk too', (t) => {
  const b = bitmap(64 * KiB, MiB + 512);
  b.setDirty(0, MiB + 512);
  b.resetDirty(1000, 128 * KiB);
  t.deepEqual(areas(b, 0, 256 * KiB), [[0, 64 * KiB], [128 * KiB, 128 * KiB]]);
  b.resetDirty(MiB, 512);
  t.false(b.isDirty(MiB));
  b.clear();
  t.is(b.count, 0);
});

test('truncation drops granules past the new end and adds clean ones', (t) => {
  const b = bitmap(64 * KiB, MiB);
  b.setDirty(0, MiB);
  b.resize(MiB / 2 + 1);
  t.is(b.size, MiB / 2 + 1);
  t.is(b.count, 9 * 64 * KiB);
  b.resize(2 * MiB);
  t.deepEqual(areas(b), [[0, MiB / 2 + 64 * KiB]]);
  b.recordWrite(2 * MiB - 1, 1);
  t.is(b.count, 10 * 64 * KiB);
});

test('merge adds the source’s ranges at the target’s granularity (qemu-storage-daemon’s counts)', (t) => {
  const size = 4 * MiB + 1024;
  const source = bitmap(64 * KiB, size);
  for (const [offset, bytes] of [[0, 1], [70000, 1000], [MiB, 64 * KiB], [4 * MiB + 696, 304]]) source.recordWrite(offset!, bytes!);
  const fine = bitmap(1024, size);
  fine.merge(source);
  t.is(fine.count, 197632);
  const coarse = bitmap(128 * KiB, size);
  coarse.merge(source);
  t.is(coarse.count, 393216);
  const before = source.count;
  source.merge(source);
  t.is(source.count, before, 'merging a bitmap into itself changes nothing');
});

test('a backup restores the old contents plus the guest writes recorded since; release keeps the new ones', (t) => {
  const b = bitmap(64 * KiB, MiB);
  b.recordWrite(0, 1);
  const backup = b.backup();
  b.clear();
  b.setDirty(512 * KiB, 1);
  b.recordWrite(256 * KiB, 1);
  backup.restore();
  t.deepEqual(areas(b), [[0, 64 * KiB], [256 * KiB, 64 * KiB]], 'the merge-like setDirty is undone, the write kept');
  backup.restore();
  t.deepEqual(areas(b), [[0, 64 * KiB], [256 * KiB, 64 * KiB]], 'a second restore does nothing');
  const kept = b.backup();
  b.clear();
  kept.release();
  kept.restore();
  t.is(b.count, 0, 'after release nothing is restored');
});

test('a backup survives a truncation in between', (t) => {
  const b = bitmap(64 * KiB, MiB);
  b.recordWrite(0, MiB);
  const backup = b.backup();
  b.clear();
  b.resize(MiB / 2);
  b.recordWrite(0, 1);
  backup.restore();
  t.is(b.size, MiB / 2);
  t.is(b.count, MiB / 2);
});

test('check: busy and inconsistent bitmaps are refused with QEMU’s messages', (t) => {
  const b = bitmap(64 * KiB, MiB);
  t.notThrows(() => b.check());
  b.setBusy(true);
  t.throws(() => b.check(), { message: "Bitmap 'b' is currently in use by another operation and cannot be used" });
  t.notThrows(() => b.check({ inconsistent: true }));
  const bad = new DirtyBitmap(node, 'bad', 512, { size: MiB, inconsistent: true });
  t.throws(() => bad.check(), { message: "Bitmap 'bad' is inconsistent and cannot be used" });
  t.notThrows(() => bad.check({ busy: true }), 'remove does not check consistency');
  t.deepEqual(bad.info(), { name: 'bad', count: 0, granularity: 512, recording: true, busy: false, persistent: false, inconsistent: true });
});

test('granularity must be a power of two of at least 512', (t) => {
  for (const g of [0, 256, 1000, 3 * 512]) t.throws(() => bitmap(g, MiB));
  t.notThrows(() => bitmap(2 ** 31, MiB));
});

test('ClusterBitmap range operations agree with a plain array', (t) => {
  type Op = { op: 'set' | 'clear'; first: number; end: number } | { op: 'resize'; clusters: number };
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ op: fc.constantFrom('set' as const, 'clear' as const), first: fc.nat(80), end: fc.nat(90) }),
    fc.record({ op: fc.constant('resize' as const), clusters: fc.nat(80) }),
  );
  fc.assert(
    fc.property(fc.nat(70), fc.array(opArb, { maxLength: 30 }), (initial, ops) => {
      let bits = new ClusterBitmap(512, initial * 512 - (initial > 0 ? 100 : 0));
      let model: boolean[] = Array.from({ length: bits.clusters }, () => false);
      for (const op of ops) {
        if (op.op === 'resize') {
          bits = bits.copy(op.clusters * 512);
          model = Array.from({ length: op.clusters }, (_, i) => model[i] ?? false);
        } else {
          if (op.op === 'set') bits.setRange(op.first, op.end);
          else bits.clearRange(op.first, op.end);
          for (let c = op.first; c < Math.min(op.end, model.length); c++) model[c] = op.op === 'set';
        }
      }
      const set = model.flatMap((v, i) => (v ? [i] : []));
      if (bits.count !== set.length) return false;
      for (let c = 0; c < model.length; c++) {
        if (bits.has(c) !== model[c]) return false;
        const nextSet = model.indexOf(true, c);
        const nextClear = model.indexOf(false, c);
        if (bits.nextSet(c) !== nextSet || bits.nextClear(c) !== nextClear) return false;
      }
      const other = bits.copy();
      other.union(bits);
      return other.count === bits.count;
    }),
  );
  t.pass();
});
