/**
 * The qemu-img-style commands run as a user runs them, next to qemu-img
 * itself: the same output and exit codes for raw images (and qcow2 once its
 * driver is registered in plugin-manifest.json). Serial: each test starts
 * several CLI processes, which load the machine enough in parallel to slow
 * down the other end-to-end files.
 */
import { copyFile, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { create, grow, hostCluster, io, patchU64, reftableEntryAt, setRefcount } from '../drivers/qcow2/check-damage.js';
import { type CommandResult as Result, commandResult } from '../helpers/command-result.js';
import { blocklayerCommand, ROOT } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

const run = commandResult;

function cli(args: string[]): Promise<Result> {
  const [command, argv] = blocklayerCommand(args);
  return run(command, argv);
}

const qemuImg = (args: string[]): Promise<Result> => run('qemu-img', args);

/** qemu-img's messages without its `qemu-img: ` prefix, ours without `blocklayer CMD: `. */
const message = (stderr: string): string => stderr.replace(/^(qemu-img|blocklayer \w+): /gm, '');

const manifest = JSON.parse(await readFile(join(ROOT, 'plugin-manifest.json'), 'utf8')) as { plugins: { name: string; enabled?: boolean }[] };
const QCOW2_REGISTERED = manifest.plugins.some((p) => p.name === 'qcow2' && p.enabled !== false);

async function workDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-img-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function sparseRaw(dir: string, name = 'sparse.raw'): Promise<string> {
  const image = join(dir, name);
  await qemuImg(['create', '-f', 'raw', image, '64M']);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 10M 3M', '-c', 'write -z 20M 1M', '-c', 'write -P 0x33 63M 1M', image]);
  return image;
}

test.serial('create: qemu-img\'s Formatting line and size (-f defaults to raw); bad sizes and options fail as in qemu-img', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await workDir(t);
  for (const args of [['-f', 'raw'], ['-o', 'preallocation=falloc']]) {
    const ours = join(dir, 'ours.raw');
    const theirs = join(dir, 'theirs.raw');
    const [result, expected] = await Promise.all([cli(['create', ...args, ours, '1536k']), qemuImg(['create', ...args, theirs, '1536k'])]);
    t.is(result.code, 0, result.stderr);
    t.is(result.stdout, expected.stdout.replace(theirs, ours));
    t.is((await stat(ours)).size, 1536 * 1024);
  }
  const img = join(dir, 'bad.raw');
  for (const args of [[img, '12Q'], ['-o', 'foo=bar', img, '1M']]) {
    const [result, expected] = await Promise.all([cli(['create', '-f', 'raw', ...args]), qemuImg(['create', '-f', 'raw', ...args])]);
    t.is(result.code, 1);
    t.is(expected.code, 1);
    t.is(result.stdout, '');
    t.is(result.stderr.replaceAll('blocklayer create: ', 'PREFIX: '), expected.stderr.replaceAll('qemu-img: ', 'PREFIX: '), args.join(' '));
  }
});

test.serial('info and map print what qemu-img prints for a sparse raw image', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await workDir(t);
  const image = await sparseRaw(dir);
  for (const args of [
    ['info', '--output=json', '-f', 'raw'],
    ['info', '-f', 'raw'],
    ['map', '--output=json', '--start-offset=512k', '-f', 'raw'],
    ['map', '-f', 'raw'],
  ]) {
    const [ours, theirs] = await Promise.all([cli([...args, image]), qemuImg([...args, image])]);
    t.is(ours.code, 0, ours.stderr);
    t.is(ours.stdout, theirs.stdout, args.join(' '));
  }
});

test.serial('check -f raw: exit code 63 and qemu-img\'s message', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await workDir(t);
  const image = join(dir, 'a.raw');
  await qemuImg(['create', '-f', 'raw', image, '1M']);
  const ours = await cli(['check', '--output=json', '-f', 'raw', image]);
  const theirs = await qemuImg(['check', '--output=json', '-f', 'raw', image]);
  t.is(ours.code, 63);
  t.is(theirs.code, 63);
  t.is(ours.stdout, '');
  t.is(ours.stderr, 'blocklayer check: This image format does not support checks\n');
  t.is(message(ours.stderr), message(theirs.stderr));
  const bad = await cli(['check', '-r', 'some', '-f', 'raw', image]);
  t.is(bad.code, 1);
  t.is(bad.stderr, "blocklayer check: Unknown option value for -r (expecting 'leaks' or 'all'): some\n");
});

test.serial('compare: qemu-img\'s lines and exit codes for identical, different and differently sized images', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await workDir(t);
  const a = await sparseRaw(dir, 'a.raw');
  const b = await sparseRaw(dir, 'b.raw');
  const c = await sparseRaw(dir, 'c.raw');
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 30000000 1', c]);
  const big = join(dir, 'big.raw');
  await qemuImg(['convert', '-f', 'raw', '-O', 'raw', a, big]);
  await qemuImg(['resize', '-f', 'raw', big, '80M']);
  const cases = [[a, b], [a, c], [big, a], ['-s', a, big]];
  for (const args of cases) {
    const [ours, theirs] = await Promise.all([cli(['compare', '-f', 'raw', '-F', 'raw', ...args]), qemuImg(['compare', '-f', 'raw', '-F', 'raw', ...args])]);
    t.is(ours.code, theirs.code, args.join(' '));
    t.is(ours.stdout, theirs.stdout, args.join(' '));
    t.is(ours.stderr, '');
  }
  const missing = join(dir, 'missing.raw');
  const [ours, theirs] = await Promise.all([cli(['compare', '-f', 'raw', '-F', 'raw', a, missing]), qemuImg(['compare', '-f', 'raw', '-F', 'raw', a, missing])]);
  t.is(ours.code, 2);
  t.is(theirs.code, 2);
  t.is(message(ours.stderr), message(theirs.stderr));
});

test.serial('convert raw to raw: qemu-img compare finds the copy identical, with the holes qemu-img convert leaves; -p draws progress on stderr', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await workDir(t);
  const src = await sparseRaw(dir);
  const ours = join(dir, 'ours.raw');
  const theirs = join(dir, 'theirs.raw');
  const result = await cli(['convert', '-p', '-f', 'raw', '-O', 'raw', src, ours]);
  t.is(result.code, 0, result.stderr);
  t.is(result.stdout, '');
  t.regex(result.stderr, /convert \|.*\| 100% \| 64\/64 MiB/);
  await qemuImg(['convert', '-f', 'raw', '-O', 'raw', src, theirs]);
  t.deepEqual(await qemuImg(['compare', '-f', 'raw', '-F', 'raw', src, ours]), { code: 0, stdout: 'Images are identical.\n', stderr: '' });
  const [mapOurs, mapTheirs] = await Promise.all([qemuImg(['map', '--output=json', '-f', 'raw', ours]), qemuImg(['map', '--output=json', '-f', 'raw', theirs])]);
  t.is(mapOurs.stdout, mapTheirs.stdout);
  const compressed = await cli(['convert', '-c', '-f', 'raw', '-O', 'raw', src, join(dir, 'c.raw')]);
  t.deepEqual(compressed, { code: 1, stdout: '', stderr: 'blocklayer convert: Compression not supported for this file format\n' });
});

test.serial('bench runs the requests through a node and reports like qemu-img bench', async (t) => {
  const dir = await workDir(t);
  const image = join(dir, 'bench.raw');
  await run('qemu-img', ['create', '-f', 'raw', image, '16M']);
  const read = await cli(['bench', '-f', 'raw', '-c', '2000', '-t', 'none', image]);
  t.is(read.code, 0, read.stderr);
  t.regex(read.stdout, /^Sending 2000 read requests, 4096 bytes each, 64 in parallel \(starting at offset 0, step size 4096\)\nRun completed in \d+\.\d{3} seconds\.\n$/);
  const write = await cli(['bench', '-f', 'raw', '-w', '-c', '500', '-d', '8', '-s', '64k', '-S', '1M', '-o', '4k', '--pattern=0x5a', '--flush-interval=100', image]);
  t.is(write.code, 0, write.stderr);
  t.regex(
    write.stdout,
    /^Sending 500 write requests, 65536 bytes each, 8 in parallel \(starting at offset 4096, step size 1048576\)\nSending flush every 100 requests\nRun completed in \d+\.\d{3} seconds\.\n$/,
  );
  if (requirePeer(t, 'qemu-io')) {
    const { stdout } = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x5a 4k 64k', '-c', `read -P 0x5a ${15 * 2 ** 20 + 4096} 64k`, image]);
    t.notRegex(stdout, /Pattern verification failed/);
  }
  const failed = await cli(['bench', '-q', '-f', 'raw', '-c', '10', '-o', '16M', image]);
  t.is(failed.code, 1);
  t.is(failed.stderr, 'blocklayer bench: Failed request: Input/output error\n');
  const cache = await cli(['bench', '-f', 'raw', '-t', 'writethrough', image]);
  t.is(cache.code, 1);
  t.is(cache.stderr, "blocklayer bench: cache mode 'writethrough' is not supported: blocklayer accepts writeback and none\n");
});

test.serial('a missing -f is refused for every command that opens an image (no probing)', async (t) => {
  const dir = await workDir(t);
  const image = join(dir, 'x.raw');
  await run('qemu-img', ['create', '-f', 'raw', image, '1M']);
  for (const args of [['info', image], ['check', image], ['convert', image, join(dir, 'y.raw')], ['dd', `if=${image}`, `of=${join(dir, 'z.raw')}`]]) {
    const result = await cli(args);
    t.deepEqual(result, { code: 1, stdout: '', stderr: `blocklayer ${args[0]}: format must be given with -f\n` }, args[0]);
  }
  // compare's own error code is 2 (1 means the images differ).
  const compare = await cli(['compare', '-f', 'raw', image, image]);
  t.deepEqual(compare, { code: 2, stdout: '', stderr: 'blocklayer compare: format must be given with -F\n' });
});

test.serial('qcow2 (once its driver is registered): create, info, convert -c, map and check next to qemu-img', async (t) => {
  if (!QCOW2_REGISTERED) {
    t.log('skipped: the qcow2 driver is not in plugin-manifest.json yet');
    t.pass();
    return;
  }
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await workDir(t);
  const created = join(dir, 'created.qcow2');
  const create = await cli(['create', '-f', 'qcow2', '-o', 'cluster_size=4k', created, '64M']);
  t.is(create.code, 0, create.stderr);
  t.is(create.stdout, `Formatting '${created}', fmt=qcow2 cluster_size=4096 extended_l2=off compression_type=zlib size=67108864 lazy_refcounts=off refcount_bits=16\n`);
  t.is((await qemuImg(['check', '-f', 'qcow2', created])).code, 0);
  const [info, qemuInfo] = await Promise.all([cli(['info', '--output=json', '-f', 'qcow2', created]), qemuImg(['info', '--output=json', '-f', 'qcow2', created])]);
  t.deepEqual(JSON.parse(info.stdout), JSON.parse(qemuInfo.stdout));
  const src = await sparseRaw(dir);
  const compressed = join(dir, 'compressed.qcow2');
  const convert = await cli(['convert', '-c', '-f', 'raw', '-O', 'qcow2', src, compressed]);
  t.is(convert.code, 0, convert.stderr);
  t.is((await qemuImg(['check', '-f', 'qcow2', compressed])).code, 0);
  t.is((await qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', src, compressed])).stdout, 'Images are identical.\n');
  const [map, qemuMap] = await Promise.all([cli(['map', '--output=json', '-f', 'qcow2', compressed]), qemuImg(['map', '--output=json', '-f', 'qcow2', compressed])]);
  t.is(map.stdout, qemuMap.stdout);
  const [check, qemuCheck] = await Promise.all([cli(['check', '--output=json', '-f', 'qcow2', compressed]), qemuImg(['check', '--output=json', '-f', 'qcow2', compressed])]);
  if (check.code === 63) {
    t.log('the qcow2 driver has no check yet: exit code 63');
  } else {
    t.is(check.code, qemuCheck.code);
    t.deepEqual(JSON.parse(check.stdout), JSON.parse(qemuCheck.stdout));
  }
});

test.serial('check -f qcow2: exit codes 0, 3, 2 and 1, and -r leaks|all, with qemu-img\'s output', async (t) => {
  if (!QCOW2_REGISTERED || !requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await workDir(t);
  const clean = join(dir, 'clean.qcow2');
  await create(clean, '64M');
  await io(clean, 'write -P 0x11 0 128k', 'write -c -P 0x22 1M 64k');
  const leaky = join(dir, 'leaky.qcow2');
  await copyFile(clean, leaky);
  // A cluster past the image's end, with refcount 1 and nothing using it.
  await grow(leaky, 2 * 65536);
  await setRefcount(leaky, Math.ceil((await stat(clean)).size / 65536), 1);
  const broken = join(dir, 'broken.qcow2');
  await copyFile(clean, broken);
  await setRefcount(broken, await hostCluster(broken, 0), 0);
  // An unaligned refcount block marks the image corrupt as it is repaired: the double check after the repairs fails.
  const corrupt = join(dir, 'corrupt.qcow2');
  await copyFile(clean, corrupt);
  await patchU64(corrupt, await reftableEntryAt(corrupt, 0), () => 0xfffffffffffffe00n);
  const cases: [string[], string, number][] = [
    [['--output=json'], clean, 0],
    [[], leaky, 3],
    [[], broken, 2],
    [['-r', 'leaks'], broken, 1],
    [['--output=json', '-r', 'all'], broken, 0],
    [['-r', 'all'], corrupt, 1],
    [['--output=json', '-r', 'all'], corrupt, 1],
  ];
  for (const [args, image, code] of cases) {
    const [ours, theirs] = [join(dir, 'ours.qcow2'), join(dir, 'theirs.qcow2')];
    await Promise.all([copyFile(image, ours), copyFile(image, theirs)]);
    const [result, expected] = await Promise.all([cli(['check', ...args, '-f', 'qcow2', ours]), qemuImg(['check', ...args, '-f', 'qcow2', theirs])]);
    const what = `check ${args.join(' ')} ${basename(image)}`;
    t.is(expected.code, code, what);
    t.is(result.code, code, what);
    t.is(result.stdout, expected.stdout.replace(theirs, ours), what);
    t.is(message(result.stderr), message(expected.stderr), what);
  }
});
