/**
 * The `mirror_top` filter node a mirror puts above its source for the job's
 * lifetime, as QEMU does: the source's users (devices, exports) do their I/O
 * through it, and on completion it is what moves onto the target. The node
 * itself passes everything through; the job watches the writes on the
 * source's hooks (mirror-writes.ts), whichever way they arrive.
 */
import { defineBlockDriver } from '../../core/block/driver.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import { Qapi } from '../../core/schema/qapi.js';

export const mirrorTopDriver = defineBlockDriver<Record<string, never>, { file: NodeChild }>({
  name: 'mirror_top',
  kind: 'filter',
  summary: 'marks a mirror source in the graph for the mirror job',
  options: Qapi.struct('BlockdevOptionsMirrorTop', {}),
  children: [{ name: 'file', required: true, filtered: true }],
  capabilities: { canZero: true, canDiscard: true, canFua: true },
  open: async ({ children }) => ({ file: children.get('file')! }),
  getLength: (state) => state.file.length,
});
