/**
 * The image tools open NBD URIs as qemu-img does (the scheme picks the nbd
 * protocol driver; the format is still named with -f): info, map and
 * convert of a qemu-nbd export agree with qemu-img run on the same URI.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import test from 'ava';
import { nbdFixture, run } from '../drivers/nbd/fixture.js';
import { blocklayerCommand, ROOT } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

const execFileAsync = promisify(execFile);

async function cli(args: string[]): Promise<string> {
  const [command, argv] = blocklayerCommand(args);
  return (await execFileAsync(command, argv, { cwd: ROOT })).stdout;
}

test('info, map and convert of nbd+unix:// URIs match qemu-img on the same export', async (t) => {
  if (!requirePeer(t, 'qemu-nbd') || !requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const f = await nbdFixture(t);
  const image = f.path('disk.raw');
  await run('qemu-img', ['create', '-q', '-f', 'raw', image, '16M']);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 3 1M 2M', '-c', 'write -P 9 9M 4k', image]);
  const server = await f.qemuNbd(image);
  const uri = `nbd+unix:///exp?socket=${server.socket}`;
  t.is(await cli(['info', '-f', 'raw', '--output=json', uri]), await run('qemu-img', ['info', '-f', 'raw', '--output=json', uri]));
  t.is(await cli(['map', '-f', 'raw', '--output=json', uri]), await run('qemu-img', ['map', '-f', 'raw', '--output=json', uri]));
  await cli(['convert', '-f', 'raw', '-O', 'qcow2', uri, f.path('copy.qcow2')]);
  t.regex(await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', image, f.path('copy.qcow2')]), /Images are identical/);
  const other = f.path('other.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', other, '16M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x44 4M 1M', other]);
  await cli(['convert', '-n', '-f', 'qcow2', '-O', 'raw', other, uri]);
  t.regex(await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', image, other]), /Images are identical/);
});

test('a malformed NBD URI is refused with a message naming it', async (t) => {
  const [command, argv] = blocklayerCommand(['info', '-f', 'raw', 'nbd+unix:///exp']);
  const error = await t.throwsAsync<Error & { stderr: string; code: number }>(execFileAsync(command, argv, { cwd: ROOT }));
  t.is(error?.code, 1);
  t.regex(error?.stderr ?? '', /Could not open 'nbd\+unix:\/\/\/exp': Invalid NBD URI 'nbd\+unix:\/\/\/exp': nbd\+unix needs '\?socket=PATH'/);
});
