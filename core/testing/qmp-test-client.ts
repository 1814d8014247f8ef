/** Serves a layer's QMP on a fresh unix socket and connects a client to it. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockLayer } from '../block-layer.js';
import { QmpClient } from '../qmp/qmp-client.js';

export interface QmpTestConnection {
  client: QmpClient;
  socketPath: string;
  /** Closes the client and removes the socket's directory (the layer stays open). */
  close(): Promise<void>;
}

export async function connectQmp(layer: BlockLayer, options: { negotiate?: boolean } = {}): Promise<QmpTestConnection> {
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-qmp-'));
  const socketPath = join(dir, 'qmp.sock');
  const { server } = await layer.serveQmp({ type: 'unix', path: socketPath });
  const client = await QmpClient.connect(socketPath, { negotiate: options.negotiate ?? true });
  return {
    client,
    socketPath,
    async close() {
      await client.close();
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
