/**
 * A protocol driver for core tests: memory-backed, with configurable limits,
 * a log of the calls the node made to it, and an optional gate that holds
 * every write until released.
 */
import { ContainerModule } from 'inversify';
import { defineBlockDriver } from '../../core/block/driver.js';
import type { Plugin } from '../../core/plugin/plugin.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';
import { TOKENS } from '../../core/tokens.js';
import { deferred, type Deferred } from '../../core/util/deferred.js';

const options = Qapi.struct('BlockdevOptionsRecording', {
  size: Qapi.size(),
  align: Qapi.optional(Qapi.size()),
  'max-transfer': Qapi.optional(Qapi.size()),
});

export interface RecordedCall {
  op: string;
  offset: number;
  length: number;
}

export class RecordingControl {
  readonly calls: RecordedCall[] = [];
  /** Resolves when a driver write starts; writes then wait for `release()`. */
  gate: Deferred | undefined;
  readonly started: (() => void)[] = [];
  /** Operations in progress right now, and the most seen at once. */
  active = 0;
  maxActive = 0;

  hold(): void {
    this.gate = deferred();
  }

  release(): void {
    this.gate?.resolve();
    this.gate = undefined;
  }

  /** Resolves when the next driver write begins. */
  nextWriteStarted(): Promise<void> {
    return new Promise((resolve) => this.started.push(resolve));
  }
}

interface State {
  data: Buffer;
  options: Static<typeof options>;
  control: RecordingControl;
}

async function tracked<T>(state: State, op: string, offset: number, length: number, fn: () => T | Promise<T>): Promise<T> {
  state.control.calls.push({ op, offset, length });
  state.control.active++;
  state.control.maxActive = Math.max(state.control.maxActive, state.control.active);
  try {
    if (op === 'write') {
      for (const notify of state.control.started.splice(0)) notify();
      if (state.control.gate) await state.control.gate.promise;
    } else {
      await Promise.resolve();
    }
    return await fn();
  } finally {
    state.control.active--;
  }
}

export function recordingPlugin(control: RecordingControl): Plugin {
  const driver = defineBlockDriver<Static<typeof options>, State>({
    name: 'recording',
    kind: 'protocol',
    summary: 'memory-backed test driver that records calls',
    options,
    capabilities: { concurrency: 'parallel' },
    async open({ options: o }) {
      return { data: Buffer.alloc(o.size), options: o, control };
    },
    getLength: (s) => s.data.length,
    limits: (s) => ({
      requestAlignment: s.options.align ?? 1,
      maxTransfer: s.options['max-transfer'] ?? Number.MAX_SAFE_INTEGER,
    }),
    read: (s, offset, buf) => tracked(s, 'read', offset, buf.length, () => void s.data.copy(buf, 0, offset, offset + buf.length)),
    write: (s, offset, buf) => tracked(s, 'write', offset, buf.length, () => void buf.copy(s.data, offset)),
    truncate: (s, length) =>
      tracked(s, 'truncate', length, 0, () => {
        const next = Buffer.alloc(length);
        s.data.copy(next, 0, 0, Math.min(length, s.data.length));
        s.data = next;
      }),
  });
  return {
    name: 'recording',
    version: '0.0.0',
    apiVersion: '1.0.0',
    module: new ContainerModule(({ bind }) => {
      bind(TOKENS.BlockDriverContribution).toConstantValue(driver);
    }),
  };
}
