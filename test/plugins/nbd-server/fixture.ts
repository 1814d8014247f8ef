/**
 * Shared set-up for the NBD server tests: a layer with the nbd-server
 * plugin (and the drivers the tests export), its server listening on a
 * Unix socket in a fresh temporary directory, and helpers to run peers
 * asynchronously — the server runs in this process, so a peer must never
 * be run synchronously (it would wait for a server that cannot answer).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { NbdServer } from '../../../plugins/nbd-server/nbd-server.js';
import { tempDir } from '../../helpers/temp-dir.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a peer; never rejects (the exit code is in the result). */
export function run(command: string, args: readonly string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 64 * MiB }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs a peer and returns its stdout; throws with its stderr if it fails. */
export async function ok(command: string, args: readonly string[]): Promise<string> {
  const result = await run(command, args);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${result.code}: ${result.stderr}`);
  return result.stdout;
}

export interface ServerFixture {
  layer: BlockLayer;
  server: NbdServer;
  dir: string;
  socket: string;
  path(name: string): string;
  /** The URI of export `name` (qemu and libnbd both take it). */
  uri(name: string): string;
  execute(command: string, args?: Record<string, unknown>): Promise<unknown>;
}

/** A layer with the NBD server started on DIR/nbd.sock; closed when the test ends. */
export async function serverFixture(t: ExecutionContext, plugins: string[] = []): Promise<ServerFixture> {
  const dir = await tempDir(t, 'blocklayer-nbd-server-');
  const layer = await createTestLayer({ plugins: ['nbd-server', 'file', 'raw', 'qcow2', 'qmp-block-commands', ...plugins] });
  t.teardown(() => layer.close());
  const socket = join(dir, 'nbd.sock');
  await layer.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
  return {
    layer,
    server: layer.container.get(NbdServer),
    dir,
    socket,
    path: (name) => join(dir, name),
    uri: (name) => `nbd+unix:///${name}?socket=${socket}`,
    execute: (command, args = {}) => layer.execute(command, args),
  };
}

/** A raw image made by qemu-img, with qemu-io commands applied. */
export async function rawImage(path: string, size: string, ...commands: string[]): Promise<void> {
  await ok('qemu-img', ['create', '-f', 'raw', path, size]);
  if (commands.length > 0) await ok('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), path]);
}

/** Adds `node` as a raw image over a file node, and exports it. */
export async function exportImage(
  f: ServerFixture,
  image: string,
  node: string,
  options: Record<string, unknown> = {},
  format = 'raw',
): Promise<void> {
  await f.execute('blockdev-add', { driver: format, 'node-name': node, file: { driver: 'file', filename: image } });
  await f.execute('block-export-add', { type: 'nbd', id: node, 'node-name': node, ...options });
}
