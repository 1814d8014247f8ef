/** Image creation compared with qemu-img create -f raw. */
import { stat, writeFile } from 'node:fs/promises';
import test from 'ava';
import { fileDriver } from '../../../drivers/file/driver.js';
import type { FileCreateOptions } from '../../../drivers/file/options.js';
import { requirePeer } from '../../helpers/peers.js';
import { fileFixture, filled, KiB, MiB, NO_OTHER_IMAGES, qemuMap, requireNative, run, sectors } from './fixture.js';

const create = (options: FileCreateOptions) => fileDriver.create!({ options, ...NO_OTHER_IMAGES });

for (const preallocation of ['off', 'falloc', 'full'] as const) {
  test(`preallocation=${preallocation} allocates and maps as qemu-img create does`, async (t) => {
    if (!requireNative(t) || !requirePeer(t, 'qemu-img')) return;
    const f = await fileFixture(t, fileDriver);
    const [ours, theirs] = [f.path('ours.img'), f.path('qemu.img')];
    await writeFile(ours, filled(MiB, 0xff));
    await create({ filename: ours, size: 5 * MiB, preallocation });
    await run('qemu-img', ['create', '-q', '-f', 'raw', '-o', `preallocation=${preallocation}`, theirs, `${5 * MiB}`]);
    t.is((await stat(ours)).size, 5 * MiB);
    t.is(await sectors(ours), await sectors(theirs));
    t.deepEqual(await qemuMap(ours), await qemuMap(theirs));
    const info = (path: string) => run('qemu-img', ['info', '--output=json', '-f', 'raw', path]).then((s) => JSON.parse(s) as Record<string, unknown>);
    const [a, b] = [await info(ours), await info(theirs)];
    t.is(a['virtual-size'], b['virtual-size']);
    t.is(a['actual-size'], b['actual-size']);
  });
}

test('a small file gets its first block written, but never past its end', async (t) => {
  if (!requireNative(t) || !requirePeer(t, 'qemu-img')) return;
  const f = await fileFixture(t, fileDriver);
  await create({ filename: f.path('small.img'), size: 3 * KiB, preallocation: 'off' });
  await run('qemu-img', ['create', '-q', '-f', 'raw', f.path('qemu.img'), `${3 * KiB}`]);
  t.deepEqual(await qemuMap(f.path('small.img')), await qemuMap(f.path('qemu.img')));
  t.is(await sectors(f.path('small.img')), await sectors(f.path('qemu.img')));
  // QEMU writes 512 bytes here and so grows a 100-byte file; we keep the size asked for.
  await create({ filename: f.path('tiny.img'), size: 100, preallocation: 'off' });
  t.is((await stat(f.path('tiny.img'))).size, 100);
});

test('nocow is accepted where the file system has no such attribute', async (t) => {
  const f = await fileFixture(t, fileDriver);
  await create({ filename: f.path('nocow.img'), size: MiB, preallocation: 'off', nocow: true });
  t.is((await stat(f.path('nocow.img'))).size, MiB);
});

test('creating over a directory fails as in QEMU', async (t) => {
  const f = await fileFixture(t, fileDriver);
  const dir = f.path('');
  await t.throwsAsync(create({ filename: dir, size: MiB }), { message: `Could not create '${dir}': Is a directory` });
});
