/**
 * The filter nodes a commit puts above `top` for the job's lifetime, as
 * QEMU does: `commit_top` (intermediate commit; the image above `top` reads
 * through it) and `mirror_top` (active commit; the device's users do their
 * I/O through it, and on completion it is what moves onto the base). Both
 * pass everything through; the jobs watch writes on `top`'s hooks.
 */
import { defineBlockDriver } from '../../core/block/driver.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import { Qapi } from '../../core/schema/qapi.js';

export const commitTopDriver = defineBlockDriver<Record<string, never>, { file: NodeChild }>({
  name: 'commit_top',
  kind: 'filter',
  summary: 'marks the top of an intermediate commit in the graph',
  options: Qapi.struct('BlockdevOptionsCommitTop', {}),
  children: [{ name: 'file', required: true, filtered: true }],
  capabilities: { canZero: true, canDiscard: true, canFua: true },
  open: async ({ children }) => ({ file: children.get('file')! }),
  getLength: (state) => state.file.length,
});

export const activeCommitTopDriver = defineBlockDriver<Record<string, never>, { file: NodeChild }>({
  name: 'mirror_top',
  kind: 'filter',
  summary: 'marks the active layer of an active commit in the graph',
  options: Qapi.struct('BlockdevOptionsActiveCommitTop', {}),
  children: [{ name: 'file', required: true, filtered: true }],
  capabilities: { canZero: true, canDiscard: true, canFua: true },
  open: async ({ children }) => ({ file: children.get('file')! }),
  getLength: (state) => state.file.length,
});
