/** The daemon and qmp subcommands, run as a user runs them. */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { QmpClient } from '../../core/qmp/qmp-client.js';
import { type CommandResult, commandResult } from '../helpers/command-result.js';
import { blocklayerCommand, ROOT } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';
import { tempDir } from '../helpers/temp-dir.js';

function cli(args: string[], cwd = ROOT): Promise<CommandResult> {
  const [command, argv] = blocklayerCommand(args);
  return commandResult(command, argv, cwd);
}

/** Daemons start in a few seconds here, but on a loaded two-core machine it can take far longer. */
async function waitFor(path: string): Promise<void> {
  for (let i = 0; i < 1200 && !(await stat(path).catch(() => undefined)); i++) await new Promise((r) => setTimeout(r, 50));
}

/**
 * Stops a daemon a failed test left running. Registered after tempDir's
 * teardown, so it runs first: the daemon is gone before its directory is.
 */
function reap(t: ExecutionContext, child: ChildProcess): void {
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  });
}

test('--qmp and --pidfile: the daemon serves, answers quit, removes its pid file and exits 0', async (t) => {
  const dir = await tempDir(t, 'blocklayer-e2e-');
  const socket = join(dir, 'qmp.sock');
  const pidfile = join(dir, 'daemon.pid');
  const [command, argv] = blocklayerCommand([
    'daemon', '--blockdev', 'memory,node-name=m0,size=1M', '--qmp', socket, '--pidfile', pidfile,
  ]);
  const child = spawn(command, argv, { cwd: ROOT, stdio: 'ignore' });
  reap(t, child);
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  await waitFor(socket);
  await waitFor(pidfile);
  t.is((await readFile(pidfile, 'utf8')).trim(), String(child.pid));
  const query = await cli(['qmp', socket, 'query-named-block-nodes', '{"flat": true}']);
  t.is(query.code, 0, query.stderr);
  const nodes = JSON.parse(query.stdout) as { return: { 'node-name': string; drv: string; image: { 'virtual-size': number } }[] };
  t.deepEqual(nodes.return.map((n) => [n['node-name'], n.drv, n.image['virtual-size']]), [['m0', 'memory', 1048576]]);
  const quit = await cli(['qmp', socket, 'quit']);
  t.is(quit.code, 0);
  t.deepEqual(JSON.parse(quit.stdout), { return: {} });
  t.is(await exited, 0);
  t.is(await stat(pidfile).catch(() => undefined), undefined, 'pid file removed');
});

test('startup errors name the option, the value and the cause; exit code 1', async (t) => {
  const result = await cli(['daemon', '--blockdev', 'driver=file,node-name=x,filename=/nonexistent']);
  t.is(result.code, 1);
  t.is(
    result.stderr.trim(),
    "blocklayer: --blockdev driver=file,node-name=x,filename=/nonexistent: Could not open '/nonexistent': No such file or directory",
  );
  const bad = await cli(['daemon', '--blockdev', 'driver=null-co,node-name=n,size=1x']);
  t.is(bad.code, 1);
  t.is(bad.stderr.trim(), "blocklayer: --blockdev driver=null-co,node-name=n,size=1x: Parameter 'size' expects integer");
  const monitor = await cli(['daemon', '--monitor', 'chardev=nope']);
  t.is(monitor.stderr.trim(), 'blocklayer: chardev "nope" not found');
});

test('with nodes only (no monitor, no export) the daemon runs until SIGTERM, then exits 0, as qemu-storage-daemon', async (t) => {
  const kinds = requirePeer(t, 'qemu-storage-daemon') ? (['qemu', 'ours'] as const) : [];
  const dir = await tempDir(t, 'blocklayer-e2e-');
  for (const kind of kinds) {
    // The pid file is written once start-up is complete (the daemon has its signal handlers then).
    const pidfile = join(dir, `${kind}.pid`);
    const args = ['--blockdev', 'driver=null-co,node-name=n0', '--pidfile', pidfile];
    const [command, argv] = kind === 'qemu' ? ['qemu-storage-daemon', args] : blocklayerCommand(['daemon', ...args]);
    const child = spawn(command, argv, { cwd: ROOT, stdio: 'ignore' });
    reap(t, child);
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await Promise.race([exited, waitFor(pidfile)]);
    // A daemon that would end by itself, once started, ends within this.
    const early = await Promise.race([exited, new Promise((resolve) => setTimeout(() => resolve('running'), 1000))]);
    t.is(early, 'running', `${kind}: still running`);
    child.kill('SIGTERM');
    t.is(await exited, 0, `${kind}: exit code after SIGTERM`);
  }
});

test('--daemonize returns once the daemon serves, and the daemon keeps running', async (t) => {
  const dir = await tempDir(t, 'blocklayer-e2e-');
  const socket = join(dir, 'qmp.sock');
  const pidfile = join(dir, 'pid');
  const result = await cli(['daemon', '--daemonize', '--qmp', socket, '--pidfile', pidfile, '--blockdev', 'null-co,node-name=n0']);
  t.is(result.code, 0, result.stderr);
  t.truthy(await stat(socket), 'the socket exists when the command returns');
  const pid = Number((await readFile(pidfile, 'utf8')).trim());
  let gone = false;
  t.teardown(() => {
    if (gone || !(pid > 0)) return;
    try {
      process.kill(pid, 'SIGKILL'); // the test failed with the daemon still running
    } catch {
      // it exited meanwhile
    }
  });
  const client = await QmpClient.connect(socket, { negotiate: true });
  t.deepEqual(await client.execute('quit'), { return: {} });
  await client.close();
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(pid, 0);
      await new Promise((r) => setTimeout(r, 50));
    } catch {
      gone = true;
      t.pass('the daemon exited after quit');
      return;
    }
  }
  t.fail('the daemon did not exit');
});

test('--daemonize reports a startup failure with exit code 1', async (t) => {
  const result = await cli(['daemon', '--daemonize', '--blockdev', 'driver=file,node-name=x,filename=/nonexistent']);
  t.is(result.code, 1);
  t.regex(result.stderr, /Could not open '\/nonexistent': No such file or directory/);
});

test('qmp prints errors and exits 1; --wait-event gives up after --timeout', async (t) => {
  const dir = await tempDir(t, 'blocklayer-e2e-');
  const socket = join(dir, 'qmp.sock');
  const [command, argv] = blocklayerCommand(['daemon', '--qmp', socket]);
  const child = spawn(command, argv, { cwd: ROOT, stdio: 'ignore' });
  reap(t, child);
  await waitFor(socket);
  const failed = await cli(['qmp', socket, 'blockdev-del', '{"node-name": "nope"}']);
  t.is(failed.code, 1);
  t.deepEqual(JSON.parse(failed.stdout), { error: { class: 'GenericError', desc: "Failed to find node with node-name='nope'" } });
  const badJson = await cli(['qmp', socket, 'blockdev-del', '{nope']);
  t.is(badJson.code, 1);
  t.regex(badJson.stderr, /^blocklayer: arguments are not JSON: /);
  const timeout = await cli(['qmp', socket, 'query-version', '--wait-event', 'NEVER', '--timeout', '1']);
  t.is(timeout.code, 1);
  t.regex(timeout.stderr, /no answer within 1 s/);
  child.kill('SIGTERM');
  t.is(await new Promise((resolve) => child.once('exit', resolve)), 0);
});

test('every subcommand has --help', async (t) => {
  for (const args of [['--help'], ['daemon', '--help'], ['qmp', '--help']]) {
    const result = await cli(args);
    t.is(result.code, 0);
    t.regex(result.stdout, /^Usage: blocklayer/);
  }
  const daemonHelp = await cli(['daemon', '--help']);
  for (const option of ['--blockdev', '--chardev', '--monitor', '--qmp', '--pidfile', '--daemonize', '--manifest']) {
    t.true(daemonHelp.stdout.includes(option), option);
  }
});

test('a bad manifest stops the daemon with an error naming it', async (t) => {
  const dir = await tempDir(t, 'blocklayer-e2e-');
  const manifest = join(dir, 'plugins.json');
  await writeFile(manifest, '{"plugins": [{"name": "qcow9", "module": "./nowhere"}]}');
  const result = await cli(['daemon', '--manifest', manifest]);
  t.is(result.code, 1);
  t.is(result.stderr.trim(), `blocklayer: Plugin 'qcow9' (./nowhere): module not found: ${join(dir, 'nowhere')}`);
});

test('query-named-block-nodes says whether the file driver uses its native sparse operations', async (t) => {
  const dir = await tempDir(t, 'blocklayer-e2e-');
  const image = join(dir, 'disk.raw');
  await writeFile(image, Buffer.alloc(65536));
  for (const [env, expected] of [[{}, 'native'], [{ BLOCKLAYER_NO_NATIVE: '1' }, 'fallback']] as const) {
    const socket = join(dir, `qmp-${expected}.sock`);
    const [command, argv] = blocklayerCommand(['daemon', '--blockdev', `driver=file,node-name=f,filename=${image}`, '--qmp', socket]);
    const child = spawn(command, argv, { cwd: ROOT, stdio: 'ignore', env: { ...process.env, ...env } });
    reap(t, child);
    await waitFor(socket);
    const client = await QmpClient.connect(socket, { negotiate: true });
    const reply = (await client.execute('query-named-block-nodes')) as { return: { image: Record<string, unknown> }[] };
    t.deepEqual(reply.return[0]!.image['format-specific'], { type: 'file', data: { 'sparse-ops': expected } });
    await client.execute('quit');
    await client.close();
    await new Promise((resolve) => child.once('exit', resolve));
  }
});
