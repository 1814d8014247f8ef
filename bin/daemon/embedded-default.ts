/**
 * `npm start`'s daemon: a raw disk under ./data (created on first run) and a
 * QMP socket next to it, so a fresh checkout has something to talk to.
 */
import { mkdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { BlockLayer } from '../../core/block-layer.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import { TOKENS } from '../../core/tokens.js';

export const DEFAULT_DISK_SIZE = 1024 * 1024 * 1024;

export interface EmbeddedDefault {
  diskPath: string;
  socketPath: string;
  created: boolean;
}

export async function prepareEmbeddedDefault(layer: BlockLayer, dataDir = 'data'): Promise<EmbeddedDefault> {
  const dir = resolve(dataDir);
  await mkdir(dir, { recursive: true });
  const diskPath = join(dir, 'disk0.raw');
  const exists = (await stat(diskPath).catch(() => undefined)) !== undefined;
  if (!exists) {
    const creator = layer.container.get<ImageCreator>(TOKENS.ImageCreator);
    await creator.create('raw', { filename: diskPath, size: DEFAULT_DISK_SIZE });
  }
  await layer.graph.add({ driver: 'raw', 'node-name': 'disk0', file: { driver: 'file', filename: diskPath } });
  return { diskPath, socketPath: join(dir, 'qmp.sock'), created: !exists };
}
