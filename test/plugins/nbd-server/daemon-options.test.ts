/**
 * The daemon's `--nbd-server` and `--export`, as qemu-storage-daemon takes
 * them: the same command lines fail with the same messages (QEMU's
 * recorded here, and checked live when it is installed), and a good one
 * serves the export.
 */
import { execFile, spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { blocklayerCommand, ROOT } from '../../helpers/daemons.js';
import { requirePeer } from '../../helpers/peers.js';
import { tempDir } from '../../helpers/temp-dir.js';
import { ok } from './fixture.js';

function runFailing(command: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd: ROOT, timeout: 60_000 }, (error, _stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : null, stderr });
    });
  });
}

/** Command lines (after the --blockdev that adds f0) and the message qemu-storage-daemon 7.2 gave. */
function cases(sock: string): [string[], string][] {
  const server = ['--nbd-server', `addr.type=unix,addr.path=${sock}`];
  return [
    [['--export', 'type=nbd,id=e0,node-name=f0'], 'NBD server not running'],
    [['--nbd-server', 'addr.type=unix'], "Parameter 'addr.path' is missing"],
    [['--nbd-server', `addr.type=unix,addr.path=${sock},foo=1`], "Parameter 'foo' is unexpected"],
    [['--nbd-server', `addr.type=unix,addr.path=${sock},addr.foo=1`], "Parameter 'addr.foo' is unexpected"],
    [['--nbd-server', `addr.type=unix,addr.path=${sock},max-connections=x`], "Parameter 'max-connections' expects integer"],
    [['--nbd-server', `addr.type=unix,addr.path=${sock},max-connections=-1`], "Parameter 'max-connections' expects uint32_t"],
    [['--nbd-server', 'addr.type=inet,addr.host=127.0.0.1'], "Parameter 'addr.port' is missing"],
    [['--nbd-server', 'addr.type=foo'], "Parameter 'type' does not accept value 'foo'"],
    [['--nbd-server', 'addr.path=/x'], "Parameter 'addr.type' is missing"],
    [[...server, '--nbd-server', `addr.type=unix,addr.path=${sock}2`], 'NBD server already running'],
    [[...server, '--export', 'nbd,id=e0,node-name=nosuch'], "Cannot find device='' nor node-name='nosuch'"],
    [[...server, '--export', 'nbd,id=e0,node-name=f0,writable=maybe'], "Parameter 'writable' expects 'on' or 'off'"],
    [[...server, '--export', 'nbd,id=e0,node-name=f0,bitmap=b0'], "Parameter 'bitmap' is unexpected"],
    [[...server, '--export', 'nbd,id=e0,node-name=f0,bitmaps.0=b0'], "Bitmap 'b0' is not found"],
    [[...server, '--export', 'nbd,id=e0,node-name=f0,bitmaps.0.node=f0,bitmaps.0.name=b0'], "Dirty bitmap 'b0' not found"],
    [[...server, '--export', 'nbd,id=e0,node-name=f0,bitmaps.0.node=zz,bitmaps.0.name=b0'], "Node 'zz' not found"],
    [[...server, '--export', 'nbd,id=e0,node-name=f0,bitmaps.0=b0,bitmaps.1.node=f0'], "Parameter 'bitmaps.1.name' is missing"],
    [[...server, '--export', 'nbd,node-name=f0'], "Parameter 'id' is missing"],
    [[...server, '--export', 'id=e0,node-name=f0'], "Parameter 'type' is missing"],
    [[...server, '--export', 'nbd,id=e0,node-name=f0', '--export', 'nbd,id=e0,node-name=f0,name=x'], "Block export id 'e0' is already in use"],
    [[...server, '--export', 'nbd,id=e0,node-name=f0', '--export', 'nbd,id=e1,node-name=f0'], "NBD server already has export named 'f0'"],
    [[...server, '--export', 'nbd,id=e0,node-name=f0,writable=on,iothread=x'], 'iothread "x" not found'],
    [['--nbd-server', `{"addr":{"type":"unix","path":"${sock}"}}`, '--export', '{"type":"nbd","id":"e0","node-name":"f0","name":5}'], "Invalid parameter type for 'name', expected: string"],
  ];
}

/** The option that failed and its message: the last line of stderr without the program's name. */
const failure = (stderr: string) => stderr.trim().split('\n').at(-1)!.replace(/^(qemu-storage-daemon|blocklayer): /, '');

test('bad --nbd-server and --export options fail as qemu-storage-daemon’s do', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'blocklayer-nbd-cli-');
  const image = join(dir, 'd.raw');
  await ok('qemu-img', ['create', '-f', 'raw', image, '1M']);
  const blockdev = ['--blockdev', `driver=file,node-name=f0,filename=${image}`];
  const withQemu = requirePeer(t, 'qemu-storage-daemon');
  const SOCK = '@SOCK@';
  const pending = cases(SOCK).map((c, index) => ({ index, c }));
  // Each of our daemons starts a Node process: a few at a time. Every run has its own socket, so concurrent daemons never meet.
  const worker = async () => {
    for (let next = pending.shift(); next !== undefined; next = pending.shift()) {
      const [template, message] = next.c;
      const sides = (withQemu ? ['ours', 'qemu'] : ['ours']).map((side) => {
        const args = template.map((a) => a.replaceAll(SOCK, join(dir, `${side}-${next.index}.sock`)));
        // The option that fails is the last one given.
        const at = args.map((a) => a.startsWith('--')).lastIndexOf(true);
        const expected = `${args[at]} ${args[at + 1]}: ${message}`;
        const [command, argv] = side === 'ours' ? blocklayerCommand(['daemon', ...blockdev, ...args]) : ['qemu-storage-daemon', [...blockdev, ...args]];
        return { side, expected, result: runFailing(command, argv) };
      });
      for (const { side, expected, result } of sides) {
        const { code, stderr } = await result;
        t.is(code, 1, `${side}: ${expected}`);
        t.is(failure(stderr), expected, side);
      }
    }
  };
  await Promise.all([worker(), worker(), worker()]);
});

test('--nbd-server and --export: the daemon serves the export (nbdinfo sees it)', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'nbdinfo')) return;
  const dir = await tempDir(t, 'blocklayer-nbd-cli-');
  const image = join(dir, 'd.raw');
  const sock = join(dir, 'n.sock');
  await ok('qemu-img', ['create', '-f', 'raw', image, '2M']);
  const [command, argv] = blocklayerCommand([
    'daemon',
    '--blockdev', `driver=file,node-name=f0,filename=${image}`,
    '--blockdev', 'raw,node-name=disk,file=f0',
    '--nbd-server', `addr.type=unix,addr.path=${sock},max-connections=4`,
    '--export', 'nbd,id=e0,node-name=disk,name=exp,writable=on,description=a disk,allocation-depth=on',
  ]);
  const child = spawn(command, argv, { cwd: ROOT, stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  t.teardown(async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
  });
  for (let i = 0; i < 1200 && !(await stat(sock).catch(() => undefined)); i++) await new Promise((r) => setTimeout(r, 50));
  const info = JSON.parse(await ok('nbdinfo', ['--json', `nbd+unix:///exp?socket=${sock}`])) as { exports: Record<string, unknown>[] };
  t.like(info.exports[0], { 'export-name': 'exp', description: 'a disk', is_read_only: false, 'export-size': 2 * 1024 * 1024, contexts: ['base:allocation', 'qemu:allocation-depth'] });
  child.kill('SIGTERM');
  await exited;
  t.is(await stat(sock).catch(() => undefined), undefined, 'the socket is removed on exit');
});
