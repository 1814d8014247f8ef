/** checkImage: qemu-img check's refusal for formats without a check, its report, text, exit codes and repair flow. */
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { ImageCreator } from '../../../core/block/image-creator.js';
import type { ImageCheckResult } from '../../../core/block/driver.js';
import { checkImage, formatCheckHuman, formatCheckJson, NO_CHECK_EXIT } from '../../../core/image-tools/check.js';
import { ImageToolError, withImage } from '../../../core/image-tools/image-access.js';
import { TOKENS } from '../../../core/tokens.js';
import { cowImages, tempDir, toolLayer } from './cow-driver.js';

function result(counts: Partial<ImageCheckResult>): ImageCheckResult {
  return { checkErrors: 0, corruptions: 0, leaks: 0, corruptionsFixed: 0, leaksFixed: 0, messages: [], ...counts };
}

async function setup(t: ExecutionContext) {
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const image = join(dir, 'x.cow');
  await layer.container.get<ImageCreator>(TOKENS.ImageCreator).create('cow', { filename: image, size: 1 << 20 });
  t.teardown(() => void cowImages.delete(image));
  return { layer, image, state: cowImages.get(image)! };
}

test('raw has no check: exit code 63 and qemu-img\'s message', async (t) => {
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const image = join(dir, 'a.raw');
  await layer.container.get<ImageCreator>(TOKENS.ImageCreator).create('raw', { filename: image, size: 1 << 20 });
  const error = await t.throwsAsync(
    withImage(layer, { filename: image, format: 'raw' }, { readOnly: true }, (node) => checkImage(node, image, 'none')),
    { instanceOf: ImageToolError, message: 'This image format does not support checks' },
  );
  t.is(error?.exitCode, NO_CHECK_EXIT);
  t.is(NO_CHECK_EXIT, 63);
});

test('a clean image: exit 0, only the non-zero counts in JSON, statistics in the text; opened read-only', async (t) => {
  const { layer, image, state } = await setup(t);
  state.check = result({ imageEndOffset: 393216, totalClusters: 16384, allocatedClusters: 1 });
  const outcome = await withImage(layer, { filename: image, format: 'cow' }, { readOnly: true }, (node) => checkImage(node, 'x.cow', 'none'));
  t.true(state.openedReadOnly);
  t.is(outcome.exitCode, 0);
  // Text copied from qemu-img 7.2 (check --output=json and human) on a qcow2 image with one allocated cluster.
  t.is(
    formatCheckJson(outcome),
    '{\n    "image-end-offset": 393216,\n    "total-clusters": 16384,\n    "check-errors": 0,\n    "allocated-clusters": 1,\n' +
      '    "filename": "x.cow",\n    "format": "cow"\n}\n',
  );
  t.is(
    formatCheckHuman(outcome),
    'No errors were found on the image.\n1/16384 = 0.01% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 393216\n',
  );
});

test('exit codes: 2 for corruptions, 3 for leaks only, 1 for internal errors; the driver\'s lines are kept', async (t) => {
  const { layer, image, state } = await setup(t);
  const check = (repair: 'none' | 'leaks' = 'none') =>
    withImage(layer, { filename: image, format: 'cow' }, { readOnly: repair === 'none' }, (node) => checkImage(node, image, repair));
  state.check = result({ leaks: 1, imageEndOffset: 655360, messages: ['Leaked cluster 9 refcount=1 reference=0'] });
  let outcome = await check();
  t.is(outcome.exitCode, 3);
  t.deepEqual(outcome.messages, ['Leaked cluster 9 refcount=1 reference=0']);
  t.is(outcome.report.leaks, 1);
  t.is(outcome.report.corruptions, undefined);
  t.is(formatCheckHuman(outcome), '\n1 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\nImage end offset: 655360\n');
  state.check = result({ corruptions: 2, leaks: 1 });
  outcome = await check();
  t.is(outcome.exitCode, 2);
  t.true(formatCheckHuman(outcome).startsWith('\n2 errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n'));
  state.check = result({ checkErrors: 1 });
  outcome = await check();
  t.is(outcome.exitCode, 1);
  t.is(formatCheckHuman(outcome), '\n1 internal errors have occurred during the check.\n');
});

test('repairs: the image is opened read-write, checked again, and the fixed counts carried over', async (t) => {
  const { layer, image, state } = await setup(t);
  state.check = result({ leaks: 3, messages: ['Leaked cluster 9 refcount=1 reference=0'] });
  const outcome = await withImage(layer, { filename: image, format: 'cow' }, { readOnly: false }, (node) => checkImage(node, image, 'leaks'));
  t.false(state.openedReadOnly);
  t.is(outcome.exitCode, 0);
  t.deepEqual(outcome.repaired, { leaks: 3, corruptions: 0 });
  t.like(outcome.report, { 'leaks-fixed': 3, leaks: undefined });
  t.deepEqual(outcome.messages, ['Leaked cluster 9 refcount=1 reference=0', 'Repairing 3 leaked clusters']);
  t.is(
    formatCheckHuman(outcome),
    'The following inconsistencies were found and repaired:\n\n    3 leaked clusters\n    0 corruptions\n\n' +
      'Double checking the fixed image now...\nNo errors were found on the image.\n',
  );
});

test('a check that throws is "Check failed: …", exit code 1', async (t) => {
  const { layer, image, state } = await setup(t);
  delete state.check;
  const node = await layer.graph.open({ driver: 'cow', file: { driver: 'file', filename: image } }, { readOnly: true });
  const failing = { ...node.driver, check: () => Promise.reject(new Error('Input/output error')) };
  Object.defineProperty(node, 'driver', { value: failing });
  const error = await t.throwsAsync(checkImage(node, image, 'none'), { instanceOf: ImageToolError, message: 'Check failed: Input/output error' });
  t.is(error?.exitCode, 1);
});
