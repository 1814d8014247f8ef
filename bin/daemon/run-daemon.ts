/**
 * The daemon: a layer from the manifest, the `--blockdev` nodes, the QMP
 * monitors, a pid file; runs until `quit` or SIGINT/SIGTERM, then closes
 * every node and removes what it created.
 */
import { rename, rm, writeFile } from 'node:fs/promises';
import { relative } from 'node:path';
import { BlockLayer } from '../../core/block-layer.js';
import { BlockLayerError } from '../../core/errors.js';
import type { QapiValidator } from '../../core/schema/qapi-validator.js';
import { TOKENS } from '../../core/tokens.js';
import { type DaemonArguments, parseBlockdevs, parseMonitors, type QmpListener } from './daemon-options.js';
import { prepareEmbeddedDefault } from './embedded-default.js';
import { type NbdArguments, startNbdFromOptions } from './nbd-options.js';
import { addObjectsFromOptions, type ObjectArguments } from './object-options.js';
import { reportReady } from './daemonize.js';
import { LINKED_PLUGINS } from '../linked-plugins.js';

export interface DaemonOptions extends DaemonArguments, NbdArguments, ObjectArguments {
  manifest?: string;
  pidfile?: string;
  embeddedDefault?: boolean;
  dataDir?: string;
}

/** Prefixes a startup error with the option that caused it, as qemu-storage-daemon does. */
function optionError(option: string, value: string, error: unknown): BlockLayerError {
  return new BlockLayerError(`${option} ${value}: ${(error as Error).message}`, 'GenericError', (error as Partial<BlockLayerError>).hint);
}

export async function runDaemon(options: DaemonOptions): Promise<void> {
  const layer = await BlockLayer.create(options.manifest === undefined ? { linkedModules: LINKED_PLUGINS } : { manifest: options.manifest });
  const validator = layer.container.get<QapiValidator>(TOKENS.QapiValidator);
  const qmp = [...(options.qmp ?? [])];
  try {
    if (options.embeddedDefault) {
      const embedded = await prepareEmbeddedDefault(layer, options.dataDir);
      qmp.push(embedded.socketPath);
      const socket = relative(process.cwd(), embedded.socketPath);
      const disk = relative(process.cwd(), embedded.diskPath);
      console.log(`blocklayer: disk 'disk0' is ${disk} (raw${embedded.created ? ', created now' : ''}); QMP on ${socket}`);
      console.log(`blocklayer: try  npx blocklayer qmp ${socket} query-named-block-nodes`);
    }
    // Before the nodes and the NBD server, which may name them (tls-creds).
    await addObjectsFromOptions(layer, options);
    const blockdevs = options.blockdev ?? [];
    const parsed = blockdevs.map((text) => {
      try {
        return parseBlockdevs([text], validator)[0]!;
      } catch (error) {
        throw optionError('--blockdev', text, error);
      }
    });
    for (const [i, blockdev] of parsed.entries()) {
      await layer.graph.add(blockdev).catch((error: unknown) => {
        throw optionError('--blockdev', blockdevs[i]!, error);
      });
    }
    await startNbdFromOptions(layer, options);
    const listeners = parseMonitors({ ...options, qmp }, validator);
    await startMonitors(layer, listeners);
    if (options.pidfile !== undefined) await writePidfile(options.pidfile);
  } catch (error) {
    await layer.close();
    throw error;
  }
  // As qemu-storage-daemon, it runs until told to stop, even with nothing else to wait for (no monitor, no export).
  const keepAlive = setInterval(() => undefined, 2 ** 31 - 1);
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    clearInterval(keepAlive);
    await layer.close();
    if (options.pidfile !== undefined) await rm(options.pidfile, { force: true });
    for (const path of qmp) await rm(path, { force: true });
    process.exit(0);
  };
  layer.lifecycle.hooks.shutdownRequested.tap('daemon', () => void stop());
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => void layer.lifecycle.requestShutdown(`host-signal`));
  }
  reportReady();
}

async function startMonitors(layer: BlockLayer, listeners: readonly QmpListener[]): Promise<void> {
  for (const listener of listeners) {
    const server = layer.createQmpServer({ pretty: listener.pretty });
    if (listener.kind === 'stdio') {
      server.serveStreams(process.stdin, process.stdout);
      continue;
    }
    await server.listen(listener.address);
    if (listener.waitForClient) await server.waitForClient();
  }
}

/** Written aside and renamed into place: whoever sees the pid file sees the pid in it. */
async function writePidfile(path: string): Promise<void> {
  const aside = `${path}.${process.pid}.tmp`;
  await writeFile(aside, `${process.pid}\n`);
  await rename(aside, path).catch(async (error: unknown) => {
    await rm(aside, { force: true });
    throw error;
  });
}
