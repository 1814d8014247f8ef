/**
 * The `copy-on-read` filter node a stream puts above the node it streams
 * into for the job's lifetime, as QEMU 7.2 does: the node's users (devices,
 * exports, an overlay's backing link) do their I/O through it. Reads pass
 * through; writes, write-zeroes and discards wait while the job copies an
 * overlapping range up, and the job's copy waits for them, so a guest write
 * is never overwritten by older data from the backing chain (the job
 * writes through its own edge, not through the filter).
 */
import { defineBlockDriver } from '../../core/block/driver.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import type { WriteFlags, ZeroFlags } from '../../core/block/request.js';
import { Qapi } from '../../core/schema/qapi.js';
import { deferred } from '../../core/util/deferred.js';

interface HeldRange {
  offset: number;
  end: number;
  done: Promise<void>;
}

/** Byte ranges held exclusively: a holder waits for every overlapping one taken before it. */
export class RangeGate {
  private readonly held = new Set<HeldRange>();

  async acquire(offset: number, bytes: number): Promise<() => void> {
    const end = offset + bytes;
    for (;;) {
      const overlapping = [...this.held].filter((h) => h.offset < end && offset < h.end);
      if (overlapping.length === 0) break;
      await Promise.all(overlapping.map((h) => h.done));
    }
    const released = deferred();
    const range: HeldRange = { offset, end, done: released.promise };
    this.held.add(range);
    return () => {
      this.held.delete(range);
      released.resolve();
    };
  }

  async run<T>(offset: number, bytes: number, body: () => Promise<T>): Promise<T> {
    const release = await this.acquire(offset, bytes);
    try {
      return await body();
    } finally {
      release();
    }
  }
}

export interface CopyOnReadState {
  file: NodeChild;
  /** Serialises the users' writes with the job's copies. */
  gate: RangeGate;
}

export const copyOnReadDriver = defineBlockDriver<Record<string, never>, CopyOnReadState>({
  name: 'copy-on-read',
  kind: 'filter',
  summary: 'marks a node being streamed into, and keeps its writers and the stream job apart',
  options: Qapi.struct('BlockdevOptionsCor', {}),
  children: [{ name: 'file', required: true, filtered: true }],
  capabilities: { canZero: true, canDiscard: true, canFua: true },
  open: async ({ children }) => ({ file: children.get('file')!, gate: new RangeGate() }),
  getLength: (state) => state.file.length,
  write: (state, offset, buf, flags: WriteFlags) => state.gate.run(offset, buf.length, () => state.file.write(offset, buf, flags)),
  writeZeroes: (state, offset, length, flags: ZeroFlags) =>
    state.gate.run(offset, length, () => state.file.writeZeroes(offset, length, flags)),
  discard: (state, offset, length) => state.gate.run(offset, length, () => state.file.discard(offset, length)),
});
