/**
 * Set-up of the quorum unit tests: a layer with the quorum driver, memory
 * children and the x-inject-error filter (a child whose reads or writes
 * fail), and the QUORUM_* events it published.
 */
import type { BlockNode } from '../../../core/block/block-node.js';
import type { BlockLayer } from '../../../core/block-layer.js';
import { createTestLayer } from '../../../core/testing/index.js';
import injectErrorPlugin from '../../fixtures/error-filter/index.js';

export const SIZE = 1 << 20;

export interface QuorumFixture {
  layer: BlockLayer;
  /** QUORUM_REPORT_BAD and QUORUM_FAILURE, as published: `{ event, ...data }`. */
  events: Record<string, unknown>[];
  /** Memory nodes `name` of SIZE bytes. */
  memory(...names: string[]): Promise<BlockNode[]>;
  /** An x-inject-error node `name` over a new memory node `name-m`; fails every matching request unless `once`. */
  faulty(name: string, event: 'read' | 'write', errno?: 'EIO' | 'ENOSPC', once?: boolean): Promise<BlockNode>;
  quorum(options: Record<string, unknown>): Promise<BlockNode>;
}

export async function quorumFixture(): Promise<QuorumFixture> {
  const layer = await createTestLayer({ plugins: ['quorum', 'raw', injectErrorPlugin] });
  const events: Record<string, unknown>[] = [];
  layer.hooks.event.tap('quorum-test', (e) => {
    if (e.event.startsWith('QUORUM_')) events.push({ event: e.event, ...e.data });
  });
  return {
    layer,
    events,
    async memory(...names) {
      const nodes: BlockNode[] = [];
      for (const name of names) nodes.push(await layer.graph.add({ driver: 'memory', 'node-name': name, size: SIZE }));
      return nodes;
    },
    async faulty(name, event, errno = 'EIO', once = false) {
      return layer.graph.add({
        driver: 'x-inject-error',
        'node-name': name,
        image: { driver: 'memory', 'node-name': `${name}-m`, size: SIZE },
        event,
        errno,
        once,
      });
    },
    quorum: (options) => layer.graph.add({ driver: 'quorum', 'node-name': 'q', ...options }),
  };
}

/** `bytes` bytes of `value`. */
export function filled(bytes: number, value: number): Buffer {
  return Buffer.alloc(bytes, value);
}

/** What `node` holds at `offset`. */
export async function readBack(node: BlockNode, offset: number, bytes: number): Promise<Buffer> {
  const buf = Buffer.alloc(bytes);
  await node.read(offset, buf);
  return buf;
}
