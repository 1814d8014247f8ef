/**
 * null-co: QEMU's null device. Writes vanish, reads return zeroes; useful
 * as a fast target and a test fixture. `latency-ns` delays every request.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { defineBlockDriver, type DriverOpenContext, type NodeDescription } from '../../core/block/driver.js';
import type { BlockStatusExtent } from '../../core/block/request.js';
import { type NullOptions, nullOptions } from './options.js';

interface NullState {
  size: number;
  latencyMs: number;
  readZeroes: boolean;
  /** 'null-co://' when only options that do not change the contents were given (QEMU's null_refresh_filename). */
  filename: string | undefined;
}

/** Nothing to open. */
async function nullOpen({ options, givenOptions }: DriverOpenContext<NullOptions>): Promise<NullState> {
  const plain = Object.keys(givenOptions).every((key) => key === 'latency-ns');
  return {
    size: options.size ?? 1 << 30,
    latencyMs: (options['latency-ns'] ?? 0) / 1e6,
    readZeroes: options['read-zeroes'] ?? true,
    filename: plain ? 'null-co://' : undefined,
  };
}

/** The configured size. */
function nullGetLength(state: NullState): number {
  return state.size;
}

async function delay(state: NullState): Promise<void> {
  if (state.latencyMs > 0) await sleep(state.latencyMs);
}

/** Zeroes (or leaves the buffer as it is, with read-zeroes off). */
async function nullRead(state: NullState, _offset: number, buf: Buffer): Promise<void> {
  await delay(state);
  if (state.readZeroes) buf.fill(0);
}

/** Discards the data. */
async function nullWrite(state: NullState): Promise<void> {
  await delay(state);
}

/** Everything reads as zeroes (when it does), nothing is data. */
async function nullBlockStatus(state: NullState, offset: number, length: number): Promise<BlockStatusExtent[]> {
  return [{ offset, length, data: false, zero: state.readZeroes, allocated: true }];
}

/** The image name, when the options leave it plain. */
async function nullDescribe(state: NullState): Promise<NodeDescription> {
  return state.filename === undefined ? {} : { filename: state.filename };
}

export const nullDriver = defineBlockDriver<NullOptions, NullState>({
  name: 'null-co',
  kind: 'protocol',
  summary: 'null device: writes vanish, reads return zeroes',
  options: nullOptions,
  capabilities: { canZero: true, canDiscard: true, canFua: true, concurrency: 'parallel' },
  open: nullOpen,
  getLength: nullGetLength,
  read: nullRead,
  write: nullWrite,
  writeZeroes: nullWrite,
  discard: nullWrite,
  blockStatus: nullBlockStatus,
  describe: nullDescribe,
});
