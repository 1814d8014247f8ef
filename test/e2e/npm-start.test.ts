/**
 * The README's quick start: `npm start` builds, runs the daemon on the
 * embedded default (a raw disk created on first run, QMP next to it), and
 * `blocklayer qmp SOCK query-named-block-nodes` lists the disk. Run against
 * a temporary data directory so the checkout stays clean.
 */
import { execFile, spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { ROOT } from '../helpers/daemons.js';
import { tempDir } from '../helpers/temp-dir.js';

const run = promisify(execFile);
const compiledCli = join(ROOT, 'build/bundle/blocklayer.js');

async function waitFor(path: string, exited: () => boolean): Promise<void> {
  for (let i = 0; i < 600 && !(await stat(path).catch(() => undefined)); i++) {
    if (exited()) throw new Error('npm start exited early');
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('npm start serves the default disk over QMP, created on first run and reused after', async (t) => {
  const dataDir = await tempDir(t, 'blocklayer-start-');
  for (const run_ of ['first', 'second']) {
    const child = spawn('npm', ['start', '--', '--data-dir', dataDir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const socket = join(dataDir, 'qmp.sock');
    // If the test fails with the daemon up, quit it over QMP (a signal to npm may
    // not reach it) before tempDir's earlier-registered teardown removes the dir.
    t.teardown(async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      await run(process.execPath, [compiledCli, 'qmp', socket, 'quit']).catch(() => child.kill('SIGTERM'));
      await exited;
    });
    await waitFor(socket, () => child.exitCode !== null);
    t.regex(output, run_ === 'first' ? /disk 'disk0' is .*disk0\.raw \(raw, created now\)/ : /disk 'disk0' is .*disk0\.raw \(raw\)/);
    t.regex(output, /try {2}npx blocklayer qmp .*qmp\.sock query-named-block-nodes/);
    const { stdout } = await run(process.execPath, [compiledCli, 'qmp', socket, 'query-named-block-nodes']);
    const nodes = (JSON.parse(stdout) as { return: { 'node-name': string; drv: string; image: Record<string, unknown> }[] }).return;
    const disk = nodes.find((n) => n['node-name'] === 'disk0');
    t.is(disk?.drv, 'raw');
    t.is(disk?.image['virtual-size'], 1 << 30);
    t.is(disk?.image.filename, join(dataDir, 'disk0.raw'));
    const file = nodes.find((n) => n.drv === 'file');
    t.deepEqual(file?.image['format-specific'], { type: 'file', data: { 'sparse-ops': 'native' } }, 'the bundled build finds the addon');
    await run(process.execPath, [compiledCli, 'qmp', socket, 'quit']);
    t.is(await exited, 0, output);
  }
});
