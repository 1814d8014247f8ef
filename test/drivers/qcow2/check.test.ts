/**
 * qcow2 check and repair against `qemu-img check` as the oracle: for each
 * image of check-cases.ts (clean ones of many shapes, and damaged ones),
 * both check copies of it and must agree on the exit code, the JSON report,
 * the human text and the lines on stderr; then both repair copies with
 * `-r leaks` and `-r all`, and must agree again, leave images `qemu-img
 * check` finds the same (clean where QEMU's is), with the same guest
 * content, and the same bytes in the file.
 *
 * Ours runs in process, printed as the CLI prints it (the CLI itself is
 * covered in test/e2e/image-tools-cli.test.ts). Its file node is opened
 * with discard=unmap, as QEMU's protocol nodes under a format are: a
 * repair that frees a cluster punches a hole, in both.
 */
import { copyFile, open, readFile, stat } from 'node:fs/promises';
import test, { type ExecutionContext } from 'ava';
import type { CheckRepair } from '../../../core/block/driver.js';
import { BlockIoError } from '../../../core/errors.js';
import { CheckFailedError, checkImage, formatCheckHuman, formatCheckJson, formatRepairNotice } from '../../../core/image-tools/check.js';
import { CASES } from './check-cases.js';
import { create, io, patchU64, qemuImg, reftableEntryAt, setRefcount } from './check-damage.js';
import { type Qcow2Fixture, qcow2Fixture, qemuCheck, requireQemu, run, runStatus, sameBytes } from './fixture.js';

/** What a check run printed: qemu-img's exit code, stdout of the human and the JSON form, and stderr. */
interface Printed {
  code: number;
  human: string;
  json: string;
  stderr: string;
}

/** qemu-img's error lines (`qemu-img: …`) and ours (`blocklayer check: …`) read the same. */
const unprefixed = (stderr: string): string => stderr.replace(/^(qemu-img|blocklayer check): /gm, '');

/** `qemu-img check` in both output forms, each on its own copy of `image` when repairing. */
async function theirs(f: Qcow2Fixture, image: string, repair: CheckRepair, name: string): Promise<Printed & { copy: string }> {
  const copies = repair === 'none' ? [image, image] : [f.path(`${name}.qcow2`), f.path(`${name}-json.qcow2`)];
  if (repair !== 'none') await Promise.all(copies.map((copy) => copyFile(image, copy)));
  const args = (copy: string, output: string) => ['check', `--output=${output}`, ...(repair === 'none' ? [] : ['-r', repair]), '-f', 'qcow2', copy];
  const [human, json] = await Promise.all([runStatus('qemu-img', args(copies[0]!, 'human')), runStatus('qemu-img', args(copies[1]!, 'json'))]);
  return { code: human.code, human: human.stdout, json: json.stdout, stderr: unprefixed(human.stderr), copy: copies[0]! };
}

/** Our check on a copy of `image` (the image itself when only checking); the report names `shownAs`. */
async function ours(f: Qcow2Fixture, image: string, repair: CheckRepair, name: string, shownAs: string): Promise<Printed & { copy: string }> {
  const copy = repair === 'none' ? image : f.path(`${name}.qcow2`);
  if (repair !== 'none') await copyFile(image, copy);
  const readOnly = repair === 'none';
  const file = { driver: 'file', filename: copy, discard: 'unmap', cache: { 'no-flush': true } };
  const node = await f.layer.graph.open({ driver: 'qcow2', file, 'read-only': readOnly }, { readOnly, check: true });
  try {
    const outcome = await checkImage(node, shownAs, repair);
    const stderr = outcome.messages.map((line) => `${line}\n`).join('') + (outcome.exitCode === 1 ? 'Check failed\n' : '');
    return { code: outcome.exitCode, human: formatCheckHuman(outcome), json: formatCheckJson(outcome), stderr, copy };
  } catch (error) {
    if (!(error instanceof CheckFailedError)) throw error;
    const stderr = [...error.messages, ...error.reports, error.message].map((line) => `${line}\n`).join('');
    return { code: error.exitCode, human: error.repaired === undefined ? '' : formatRepairNotice(error.repaired), json: '', stderr, copy };
  } finally {
    await f.layer.graph.closeIfUnused(node);
  }
}

function samePrinted(t: ExecutionContext, actual: Printed, expected: Printed, what: string): void {
  t.is(actual.code, expected.code, `${what}: exit code`);
  t.is(actual.stderr, expected.stderr, `${what}: stderr`);
  t.is(actual.human, expected.human, `${what}: human text`);
  // Compared parsed: the key order is QEMU's QAPI visitor's (nothing is printed when the check fails).
  const parsed = (json: string): unknown => (json === '' ? json : JSON.parse(json));
  t.deepEqual(parsed(actual.json), parsed(expected.json), `${what}: JSON report`);
}

for (const c of CASES) {
  test(`${c.name}: check, -r leaks and -r all as qemu-img`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    const image = f.path('image.qcow2');
    await c.build(image);
    const pristine = await readFile(image);
    samePrinted(t, await ours(f, image, 'none', 'image', image), await theirs(f, image, 'none', 'image'), 'check');
    sameBytes(t, await readFile(image), pristine, 'a check changes nothing');
    for (const repair of ['leaks', 'all'] as const) {
      const expected = await theirs(f, image, repair, `theirs-${repair}`);
      const actual = await ours(f, image, repair, `ours-${repair}`, f.path(`theirs-${repair}-json.qcow2`));
      samePrinted(t, actual, expected, `-r ${repair}`);
      const [after, afterTheirs] = await Promise.all([qemuCheck(actual.copy), qemuCheck(expected.copy)]);
      t.is(after.code, afterTheirs.code, `-r ${repair}: qemu-img check afterwards`);
      if (!c.unreadable) {
        const compare = await runStatus('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', expected.copy, actual.copy]);
        t.deepEqual(compare, { code: 0, stdout: 'Images are identical.\n', stderr: '' }, `-r ${repair}: guest content`);
      }
      if (c.fileDiffers?.repairs.includes(repair)) {
        t.log(`-r ${repair}: the files may differ: ${c.fileDiffers.why}`);
        continue;
      }
      t.deepEqual({ ...after.report, filename: '' }, { ...afterTheirs.report, filename: '' }, `-r ${repair}: qemu-img check afterwards`);
      sameBytes(t, await readFile(actual.copy), await readFile(expected.copy), `-r ${repair}: the repaired file`);
    }
  });
}

test('a node opened read-only is checked but never repaired', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('leaky.qcow2');
  await create(image, '64M');
  await io(image, 'write -P 0x11 0 64k');
  await setRefcount(image, 5, 2);
  const pristine = await readFile(image);
  const node = await f.open(image, { 'read-only': true });
  const found = await node.driver.check!(node.driverState, 'none');
  t.like(found, { leaks: 1, corruptions: 1, leaksFixed: 0, corruptionsFixed: 0 });
  for (const repair of ['leaks', 'all'] as const) {
    const error = await t.throwsAsync(node.driver.check!(node.driverState, repair), { instanceOf: BlockIoError });
    t.is(error?.errno, 'EROFS', repair);
  }
  await f.close();
  sameBytes(t, await readFile(image), pristine, 'the file is unchanged');
  t.like((await qemuCheck(image)).report, { leaks: 1, corruptions: 1 });
});

test('a failed -r leaks on a dirty image leaves its dirty bit set (QEMU clears it when it closes the image)', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('dirty.qcow2');
  await create(image, '64M', 'lazy_refcounts=on');
  await io(image, 'write -P 0x33 0 200k', 'abort').catch(() => undefined);
  const dirtyFlag = async (path: string) => {
    const info = JSON.parse(await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', path])) as { 'dirty-flag': boolean };
    return info['dirty-flag'];
  };
  t.true(await dirtyFlag(image));
  const [actual, expected] = [await ours(f, image, 'leaks', 'ours', image), await theirs(f, image, 'leaks', 'theirs')];
  t.is(actual.code, 1);
  t.is(expected.code, 1);
  t.true(await dirtyFlag(actual.copy), 'ours: still dirty, so a read-write open repairs it');
  t.false(await dirtyFlag(expected.copy), "QEMU's: marked clean although its refcounts are wrong");
  t.is((await qemuCheck(actual.copy)).code, 2);
});

test('a check on a node in use sees what it has cached and not yet written', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('busy.qcow2');
  await create(image, '64M');
  const node = await f.open(image);
  await node.write(0, Buffer.alloc(300 * 1024, 0x5a));
  await node.write(5 * 2 ** 20, Buffer.alloc(65536, 0x5b), { compressed: true });
  const found = await node.driver.check!(node.driverState, 'none');
  t.like(found, { checkErrors: 0, corruptions: 0, leaks: 0, allocatedClusters: 6, compressedClusters: 1, messages: [] });
  await f.close();
  t.like((await qemuCheck(image)).report, { 'allocated-clusters': 6, 'compressed-clusters': 1 });
});

/** The first `length` bytes of `path` and the last `tail` bytes before its end. */
async function ends(path: string, length: number, tail: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    const buf = Buffer.alloc(length + tail);
    await handle.read(buf, 0, length, 0);
    await handle.read(buf, length, tail, size - tail);
    return buf;
  } finally {
    await handle.close();
  }
}

// Serial (ava runs these before the others of the file): the memory it measures is the process's.
test.serial('a refcount block 256 GiB out is repaired as qemu-img repairs it, counting only the clusters referenced', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('far.qcow2');
  await create(image, '64M', 'cluster_size=4096');
  await io(image, 'write -P 0x11 0 128k');
  // The repair grows the file to hold the refcount block: 64 Mi clusters of 4 KiB, which QEMU counts in a 128 MiB table.
  await patchU64(image, await reftableEntryAt(image, 1), () => 256n << 30n);
  const expected = await theirs(f, image, 'all', 'theirs');
  const before = process.memoryUsage().arrayBuffers;
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers - before)), 2);
  const actual = await ours(f, image, 'all', 'ours', f.path('theirs-json.qcow2')).finally(() => clearInterval(sampler));
  samePrinted(t, actual, expected, '-r all');
  t.true(expected.stderr.includes('Repairing refcount block 1 is outside image'), 'the case is the one meant');
  t.true(peak < 16 * 2 ** 20, `the computed refcounts took ${peak} bytes`);
  const [after, afterTheirs] = await Promise.all([qemuCheck(actual.copy), qemuCheck(expected.copy)]);
  t.deepEqual({ ...after.report, filename: '' }, { ...afterTheirs.report, filename: '' }, 'qemu-img check afterwards');
  t.is((await stat(actual.copy)).size, (await stat(expected.copy)).size, 'the file grew as far');
  sameBytes(t, await ends(actual.copy, 2 ** 20, 4096), await ends(expected.copy, 2 ** 20, 4096), 'the metadata written and the far block');
});

test('a repair of an image with an internal snapshot and a persistent bitmap leaves both (qemu-img 7.2 drops the snapshot)', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('snapshot-bitmap.qcow2');
  await create(image, '8M');
  await io(image, 'write -P 0x11 0 300k');
  await qemuImg('snapshot', '-c', 's1', image);
  await qemuImg('bitmap', '--add', image, 'b0');
  const pristine = await readFile(image);
  for (const repair of ['leaks', 'all'] as const) {
    const actual = await ours(f, image, repair, `ours-${repair}`, image);
    t.is(actual.code, 0, `-r ${repair}`);
    t.is(actual.stderr, '', `-r ${repair}: nothing to repair`);
    // qemu-img 7.2's check -r here counts the snapshot's clusters as leaked, frees them and writes nb_snapshots 0 (seen, not assumed).
    sameBytes(t, await readFile(actual.copy), pristine, `-r ${repair}: the file is unchanged`);
  }
  t.regex(await run('qemu-img', ['snapshot', '-l', f.path('ours-all.qcow2')]), /\bs1\b/);
});
