/**
 * Copy-before-write. Backup inserts a `copy-before-write` filter node above
 * its source for the job's lifetime (QEMU's graph shape: the source's users
 * write through it), and intercepts every write, write-zeroes and discard
 * that reaches the source, whichever way it comes, on the source's
 * `beforeWrite` hook: the old data of the clusters the request touches is
 * copied to the target first, by the same engine the background copy uses,
 * so a cluster is never copied twice and a write waits only for its own
 * clusters. If that copy fails, the write fails (QEMU's break-guest-write).
 */
import type { BlockNode } from '../../core/block/block-node.js';
import { defineBlockDriver } from '../../core/block/driver.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import type { WriteRequest } from '../../core/block/request.js';
import { type BlockCopy, CopyError } from '../../core/copy/block-copy.js';
import { BlockIoError, toBlockIoError } from '../../core/errors.js';
import { untap } from '../../core/hooks/untap.js';
import { Qapi } from '../../core/schema/qapi.js';

/** The filter node itself passes everything through; only backups create it. */
export const copyBeforeWriteDriver = defineBlockDriver<Record<string, never>, { file: NodeChild }>({
  name: 'copy-before-write',
  kind: 'filter',
  summary: 'marks a backup source in the graph for the backup job',
  options: Qapi.struct('BlockdevOptionsCbw', {}),
  children: [{ name: 'file', required: true, filtered: true }],
  capabilities: { canZero: true, canDiscard: true, canFua: true },
  open: async ({ children }) => ({ file: children.get('file')! }),
  getLength: (state) => state.file.length,
});

export class CopyBeforeWrite {
  constructor(
    private readonly source: BlockNode,
    private readonly copy: BlockCopy,
    private readonly tapName: string,
  ) {}

  install(): void {
    this.source.hooks.beforeWrite.tapPromise(this.tapName, (request) => this.beforeWrite(request));
  }

  remove(): void {
    untap(this.source.hooks.beforeWrite, this.tapName);
  }

  private async beforeWrite(request: WriteRequest): Promise<Error | undefined> {
    if (request.kind === 'truncate') {
      return new BlockIoError('EPERM', `Node '${this.source.nodeName}' cannot be resized while it is a backup source`);
    }
    try {
      await this.copy.copyBeforeWrite(request.offset, request.bytes);
      return undefined;
    } catch (error) {
      return error instanceof CopyError ? error.ioError : toBlockIoError(error);
    }
  }
}
