/**
 * The guest side of the backup property tests: generated I/O operations,
 * issuing them through the device, and a model of what the source must
 * contain afterwards. Operations issued at the same time may land in any
 * order (each one lands whole), so a batch is checked against every order.
 */
import fc from 'fast-check';
import type { BlockBackend } from '../../../core/block/block-backend.js';
import { CLUSTER, randomBytes, type RecordedRequest } from './backup-fixture.js';

export type OpKind = 'write' | 'zero-data' | 'write-zeroes' | 'discard';

/** Where an operation starts: near one of a few hot clusters (so operations overlap), or anywhere. */
export type Where = { hot: number; within: number } | { fraction: number };

export interface OpSpec {
  kind: OpKind;
  where: Where;
  length: number;
  seed: number;
}

export interface GuestOp {
  kind: OpKind;
  offset: number;
  bytes: number;
  /** For writes: the data. */
  data: Buffer | undefined;
}

const HOT_SPOTS = 6;

export const whereArb: fc.Arbitrary<Where> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ hot: fc.integer({ min: 0, max: HOT_SPOTS }), within: fc.integer({ min: -70_000, max: 140_000 }) }) },
  { weight: 2, arbitrary: fc.record({ fraction: fc.integer({ min: 0, max: 999_999 }) }) },
);

export const lengthArb: fc.Arbitrary<number> = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 4096 }) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 80_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 60_000, max: 300_000 }) },
);

export const opArb: fc.Arbitrary<OpSpec> = fc.record({
  kind: fc.oneof(
    { weight: 6, arbitrary: fc.constant<OpKind>('write') },
    { weight: 1, arbitrary: fc.constant<OpKind>('zero-data') },
    { weight: 2, arbitrary: fc.constant<OpKind>('write-zeroes') },
    { weight: 2, arbitrary: fc.constant<OpKind>('discard') },
  ),
  where: whereArb,
  length: lengthArb,
  seed: fc.integer(),
});

/** Places an operation on a disk of `size` bytes; undefined if nothing is left of it. */
export function resolveOp(spec: OpSpec, size: number): GuestOp | undefined {
  const clusters = Math.ceil(size / CLUSTER);
  let offset: number;
  if ('hot' in spec.where) {
    // Hot spot k: the first cluster, the last (possibly short) one, and clusters spread between.
    const cluster = Math.min(clusters - 1, Math.floor((spec.where.hot * (clusters - 1)) / HOT_SPOTS));
    offset = cluster * CLUSTER + spec.where.within;
  } else {
    offset = Math.floor((spec.where.fraction / 1_000_000) * size);
  }
  offset = Math.max(0, Math.min(size - 1, offset));
  const bytes = Math.min(spec.length, size - offset);
  if (bytes <= 0) return undefined;
  const data =
    spec.kind === 'write' ? randomBytes(spec.seed, bytes) : spec.kind === 'zero-data' ? Buffer.alloc(bytes) : undefined;
  return { kind: spec.kind, offset, bytes, data };
}

export function describeOp(op: GuestOp): string {
  return `${op.kind}@${op.offset}+${op.bytes}`;
}

/** The request kind an operation arrives as at the source node. */
function requestKind(op: GuestOp): RecordedRequest['kind'] {
  return op.kind === 'write' || op.kind === 'zero-data' ? 'write' : op.kind;
}

export function issue(dev: BlockBackend, op: GuestOp): Promise<void> {
  switch (op.kind) {
    case 'write':
    case 'zero-data':
      return dev.write(op.offset, op.data!);
    case 'write-zeroes':
      return dev.writeZeroes(op.offset, op.bytes, { mayUnmap: true });
    case 'discard':
      return dev.discard(op.offset, op.bytes);
  }
}

/**
 * Pairs operations with the requests that reached the source node.
 * Returns, per operation, the request that matched it (or undefined: the
 * operation never reached the source), and the requests nothing explains.
 */
export function matchRequests(
  ops: readonly GuestOp[],
  requests: readonly RecordedRequest[],
): { reached: (RecordedRequest | undefined)[]; unexplained: RecordedRequest[] } {
  const left = [...requests];
  const reached = ops.map((op) => {
    const index = left.findIndex((r) => r.kind === requestKind(op) && r.offset === op.offset && r.bytes === op.bytes);
    return index < 0 ? undefined : left.splice(index, 1)[0];
  });
  return { reached, unexplained: left };
}

/** Applies an operation to `buf`, which holds the disk bytes from `base` on. */
export function applyOp(buf: Buffer, base: number, op: GuestOp): void {
  const start = Math.max(op.offset, base);
  const end = Math.min(op.offset + op.bytes, base + buf.length);
  if (end <= start) return;
  if (op.data !== undefined) op.data.copy(buf, start - base, start - op.offset, end - op.offset);
  else buf.fill(0, start - base, end - base);
}

export function span(ops: readonly GuestOp[]): { start: number; end: number } {
  let start = Number.POSITIVE_INFINITY;
  let end = 0;
  for (const op of ops) {
    start = Math.min(start, op.offset);
    end = Math.max(end, op.offset + op.bytes);
  }
  return start < end ? { start, end } : { start: 0, end: 0 };
}

/** Operations in groups of overlapping ranges; operations of different groups commute. */
export function overlapGroups(ops: readonly GuestOp[]): GuestOp[][] {
  const sorted = [...ops].sort((a, b) => a.offset - b.offset);
  const groups: GuestOp[][] = [];
  let end = -1;
  for (const op of sorted) {
    if (op.offset < end) groups[groups.length - 1]!.push(op);
    else groups.push([op]);
    end = Math.max(end, op.offset + op.bytes);
  }
  return groups;
}

function* permutations<T>(items: readonly T[]): Generator<T[]> {
  if (items.length <= 1) {
    yield [...items];
    return;
  }
  for (let i = 0; i < items.length; i++) {
    const rest = [...items.slice(0, i), ...items.slice(i + 1)];
    for (const tail of permutations(rest)) yield [items[i]!, ...tail];
  }
}

/**
 * Whether `actual` (disk bytes from `base` on) is `before` with `ops`
 * applied in some order.
 */
export function isSomeOrder(actual: Buffer, before: Buffer, base: number, ops: readonly GuestOp[]): boolean {
  const candidate = Buffer.alloc(before.length);
  for (const order of permutations(ops)) {
    before.copy(candidate);
    for (const op of order) applyOp(candidate, base, op);
    if (candidate.equals(actual)) return true;
  }
  return false;
}
