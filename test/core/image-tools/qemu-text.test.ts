/** qemu-img's text conventions: QDict key order, size_to_str, %#x. */
import test from 'ava';
import { hexAlt, qdictOrdered, qemuJsonPretty, sizeToStr } from '../../../core/image-tools/qemu-text.js';

test('objects come out in the order qemu-img 7.2 prints ImageInfo, ImageCheck and qcow2 data', (t) => {
  // Members given in QAPI order, as QEMU's visitor adds them; expected orders copied from qemu-img 7.2 output.
  const info = { filename: 'a', format: 'raw', 'dirty-flag': false, 'actual-size': 1, 'virtual-size': 2 };
  t.deepEqual(Object.keys(qdictOrdered(info) as object), ['virtual-size', 'filename', 'format', 'actual-size', 'dirty-flag']);
  const overlay = {
    filename: 't',
    format: 'qcow2',
    'dirty-flag': false,
    'actual-size': 1,
    'virtual-size': 2,
    'cluster-size': 3,
    'backing-filename': 'b',
    'full-backing-filename': 'b',
    'backing-filename-format': 'qcow2',
    'format-specific': { type: 'qcow2', data: {} },
  };
  t.deepEqual(Object.keys(qdictOrdered(overlay) as object), [
    'backing-filename-format',
    'virtual-size',
    'filename',
    'cluster-size',
    'format',
    'actual-size',
    'format-specific',
    'full-backing-filename',
    'backing-filename',
    'dirty-flag',
  ]);
  const qcow2 = { compat: '1.1', 'compression-type': 'zlib', 'lazy-refcounts': false, 'refcount-bits': 16, corrupt: false, 'extended-l2': false };
  t.deepEqual(Object.keys(qdictOrdered(qcow2) as object), ['compat', 'compression-type', 'lazy-refcounts', 'refcount-bits', 'corrupt', 'extended-l2']);
  const check = { filename: 'l', format: 'qcow2', 'check-errors': 0, 'image-end-offset': 1, leaks: 1, 'total-clusters': 2, 'allocated-clusters': 3 };
  t.deepEqual(Object.keys(qdictOrdered(check) as object), ['image-end-offset', 'total-clusters', 'check-errors', 'leaks', 'allocated-clusters', 'filename', 'format']);
});

test('pretty JSON is indented four spaces, as qobject_to_json_pretty', (t) => {
  t.is(
    qemuJsonPretty({ filename: 'e.raw', format: 'raw', 'dirty-flag': false, 'actual-size': 0, 'virtual-size': 0 }),
    '{\n    "virtual-size": 0,\n    "filename": "e.raw",\n    "format": "raw",\n    "actual-size": 0,\n    "dirty-flag": false\n}\n',
  );
});

test('sizes read as size_to_str words them', (t) => {
  t.is(sizeToStr(0), '0 B');
  t.is(sizeToStr(512), '512 B');
  t.is(sizeToStr(1000), '0.977 KiB');
  t.is(sizeToStr(200704), '196 KiB');
  t.is(sizeToStr(5242880), '5 MiB');
  t.is(sizeToStr(67108864), '64 MiB');
  t.is(sizeToStr(1.5 * 2 ** 30), '1.5 GiB');
  t.is(sizeToStr(10 * 2 ** 40), '10 TiB');
});

test('%#x', (t) => {
  t.is(hexAlt(0), '0');
  t.is(hexAlt(0xa00000), '0xa00000');
});
