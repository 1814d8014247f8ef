/**
 * Helpers for the nbd driver tests: a graph with the nbd driver, a
 * temporary directory, and reference servers (qemu-nbd, nbdkit) started as
 * daemons that are ready when the call returns and killed by PID when the
 * test ends (or the worker exits).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { BlockGraph } from '../../../core/block/block-graph.js';
import type { BlockNode } from '../../../core/block/block-node.js';
import { DriverRegistry } from '../../../core/block/driver-registry.js';
import { BlockLayerHooks } from '../../../core/hooks/block-layer-hooks.js';
import { QapiValidator } from '../../../core/schema/qapi-validator.js';
import { nbdDriver } from '../../../drivers/nbd/driver.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export const run = async (command: string, args: string[]): Promise<string> => (await promisify(execFile)(command, args)).stdout;

const started = new Set<number>();
process.once('exit', () => {
  for (const pid of started) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

/** True once `pid` has exited (a zombie waiting to be reaped counts: its sockets are closed). */
async function exited(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** Kills `pid` and waits until it has exited (its socket released). */
export async function kill(pid: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  started.delete(pid);
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  for (let i = 0; i < 500; i++) {
    if (await exited(pid)) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`process ${pid} did not exit`);
}

/** The daemon's PID; nbdkit's daemon may write its pidfile just after the parent has returned. */
async function readPid(pidFile: string): Promise<number> {
  for (let i = 0; ; i++) {
    const text = await readFile(pidFile, 'utf8').catch(() => '');
    if (text.endsWith('\n')) return Number(text.trim());
    if (i >= 500) throw new Error(`no PID in ${pidFile}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export interface NbdServer {
  socket: string;
  pid: number;
  /** The `server` member for the driver's options. */
  server: { type: 'unix'; path: string };
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface NbdFixture {
  graph: BlockGraph;
  dir: string;
  path(name: string): string;
  /** Adds node 'n' on `server` with further options. */
  add(server: NbdServer, extra?: Record<string, unknown>): Promise<BlockNode>;
  /** qemu-nbd serving a raw `image` as export 'exp' (--persistent --shared=8), plus `args`. */
  qemuNbd(image: string, args?: string[], name?: string): Promise<NbdServer>;
  /** nbdkit with `args` (plugin, filters, parameters) on a Unix socket. */
  nbdkit(args: string[], name?: string): Promise<NbdServer>;
  /** nbd-server (the reference implementation) serving `image` as export 'exp', plus export settings such as `readonly = true`. */
  nbdServer(image: string, settings?: string[], name?: string): Promise<NbdServer>;
}

export async function nbdFixture(t: ExecutionContext): Promise<NbdFixture> {
  const validator = new QapiValidator();
  const registry = new DriverRegistry(validator);
  registry.register(nbdDriver, 'nbd');
  const graph = new BlockGraph(registry, validator, new BlockLayerHooks());
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-nbd-'));
  const servers: NbdServer[] = [];
  t.teardown(async () => {
    await graph.closeAll();
    for (const server of servers) await server.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const daemon = async (name: string, start: (socket: string, pidFile: string) => Promise<unknown>): Promise<NbdServer> => {
    const socket = join(dir, `${name}.sock`);
    const pidFile = join(dir, `${name}.pid`);
    await rm(socket, { force: true });
    // A server started again under the same name must not be mistaken for the previous one by its old pidfile.
    await rm(pidFile, { force: true });
    await start(socket, pidFile);
    const pid = await readPid(pidFile);
    started.add(pid);
    const server: NbdServer = { socket, pid, server: { type: 'unix', path: socket }, stop: (signal) => kill(pid, signal) };
    servers.push(server);
    return server;
  };
  return {
    graph,
    dir,
    path: (name) => join(dir, name),
    add: (server, extra = {}) => graph.add({ driver: 'nbd', 'node-name': 'n', server: server.server, export: 'exp', ...extra }),
    qemuNbd: (image, args = [], name = 'q') =>
      daemon(name, (socket, pidFile) =>
        run('qemu-nbd', ['-f', 'raw', '-x', 'exp', `--socket=${socket}`, '--persistent', '--shared=8', '--fork', `--pid-file=${pidFile}`, ...args, image]),
      ),
    nbdkit: (args, name = 'k') => daemon(name, (socket, pidFile) => run('nbdkit', ['-U', socket, '-P', pidFile, ...args])),
    nbdServer: (image, settings = [], name = 'n') =>
      daemon(name, async (socket, pidFile) => {
        const config = join(dir, `${name}.conf`);
        await writeFile(config, ['[generic]', `unixsock = ${socket}`, '[exp]', `exportname = ${image}`, ...settings, ''].join('\n'));
        await run('nbd-server', ['-C', config, '-p', pidFile]);
      }),
  };
}

/** A sparse file of `size` bytes with `pattern` bytes at each [offset, length]. */
export async function sparseFile(path: string, size: number, extents: [number, number, number][] = []): Promise<void> {
  await writeFile(path, '');
  await truncate(path, size);
  const handle = await open(path, 'r+');
  try {
    for (const [offset, length, pattern] of extents) await handle.write(Buffer.alloc(length, pattern), 0, length, offset);
  } finally {
    await handle.close();
  }
}

export async function readNode(node: BlockNode, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length, 0x55);
  await node.read(offset, buf);
  return buf;
}

export function filled(length: number, byte: number): Buffer {
  return Buffer.alloc(length, byte);
}

/** Buffer equality without ava's slow deep diff. */
export function sameBytes(t: ExecutionContext, actual: Buffer, expected: Buffer, message?: string): void {
  t.true(actual.equals(expected), message);
}
