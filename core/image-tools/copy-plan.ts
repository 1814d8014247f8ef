/**
 * How convert turns the source's block status into requests: operations
 * aligned to the target's clusters (a cluster that is not uniformly zero or
 * skipped is copied whole, so the target never writes part of a cluster it
 * could have left alone, and compressed writes are whole clusters), data
 * cut into buffers, and the zero runs inside the data that need no write.
 */
import { isAllZero } from './buffers.js';

export interface CopyOp {
  /** skip: leave the target alone (-B: the backing file provides it); zero: reads as zeroes; data: copy. */
  kind: 'skip' | 'zero' | 'data';
  offset: number;
  length: number;
}

export interface PlanOptions {
  /** The target's cluster size (0: no alignment). */
  align: number;
  /** The image end: the last cluster may be short. */
  end: number;
  /** Longest data operation (a multiple of `align`). */
  maxData: number;
  /** Copy zero ranges as data (-S 0: a fully allocated target). */
  zeroAsData: boolean;
}

const down = (n: number, align: number): number => (align > 0 ? n - (n % align) : n);
const up = (n: number, align: number): number => (align > 0 ? down(n + align - 1, align) : n);

/** The pieces of one operation once aligned: its partial clusters become data. */
function alignedPieces(op: CopyOp, align: number, end: number): CopyOp[] {
  const opEnd = op.offset + op.length;
  const outerStart = down(op.offset, align);
  const outerEnd = Math.min(up(opEnd, align), end);
  if (op.kind === 'data') return [{ kind: 'data', offset: outerStart, length: outerEnd - outerStart }];
  const innerStart = up(op.offset, align);
  const innerEnd = opEnd === end ? opEnd : down(opEnd, align);
  if (innerStart >= innerEnd) return [{ kind: 'data', offset: outerStart, length: outerEnd - outerStart }];
  return [
    { kind: 'data', offset: outerStart, length: innerStart - outerStart },
    { kind: op.kind, offset: innerStart, length: innerEnd - innerStart },
    { kind: 'data', offset: innerEnd, length: outerEnd - innerEnd },
  ];
}

/**
 * Aligned, non-overlapping operations covering the image once, in order:
 * neighbours of a kind merged, data cut at multiples of `maxData`.
 */
export async function* planOps(source: AsyncIterable<CopyOp>, options: PlanOptions): AsyncGenerator<CopyOp> {
  let covered = 0;
  let pending: CopyOp | undefined;
  for await (const raw of source) {
    if (raw.length <= 0) continue;
    const op = options.zeroAsData && raw.kind === 'zero' ? { ...raw, kind: 'data' as const } : raw;
    for (const piece of alignedPieces(op, options.align, options.end)) {
      const start = Math.max(piece.offset, covered);
      const pieceEnd = piece.offset + piece.length;
      if (pieceEnd <= start) continue;
      covered = pieceEnd;
      if (pending !== undefined && pending.kind === piece.kind && pending.offset + pending.length === start) {
        pending.length = pieceEnd - pending.offset;
      } else {
        if (pending !== undefined) yield* cut(pending, options.maxData);
        pending = { kind: piece.kind, offset: start, length: pieceEnd - start };
      }
      if (pending.kind === 'data' && pending.length > options.maxData) {
        // Hand out the whole buffers now; keep the rest, which may grow.
        const last = down(pending.offset + pending.length, options.maxData);
        if (last > pending.offset) {
          yield* cut({ kind: 'data', offset: pending.offset, length: last - pending.offset }, options.maxData);
          const pendingEnd = pending.offset + pending.length;
          pending = last < pendingEnd ? { kind: 'data', offset: last, length: pendingEnd - last } : undefined;
        }
      }
    }
  }
  if (pending !== undefined) yield* cut(pending, options.maxData);
}

/** Data cut at multiples of `max`; other kinds as they are. */
function* cut(op: CopyOp, max: number): Generator<CopyOp> {
  if (op.kind !== 'data' || op.length <= max) {
    if (op.length > 0) yield op;
    return;
  }
  const end = op.offset + op.length;
  for (let offset = op.offset; offset < end; ) {
    const next = Math.min(down(offset, max) + max, end);
    yield { kind: 'data', offset, length: next - offset };
    offset = next;
  }
}

export interface DataRun {
  offset: number;
  length: number;
  zero: boolean;
}

/**
 * `buf` (the data at `offset`) as runs of data and of zeroes, in blocks of
 * `sparseSize` at multiples of it: a block of zeroes need not be written.
 */
export function dataRuns(buf: Buffer, offset: number, sparseSize: number): DataRun[] {
  if (sparseSize <= 0) return [{ offset, length: buf.length, zero: false }];
  const runs: DataRun[] = [];
  const end = offset + buf.length;
  for (let at = offset; at < end; ) {
    const next = Math.min(down(at, sparseSize) + sparseSize, end);
    // Most data blocks start or end with a byte that is not zero: no need to compare them whole.
    const zero = buf[at - offset] === 0 && buf[next - offset - 1] === 0 && isAllZero(buf.subarray(at - offset, next - offset));
    const last = runs[runs.length - 1];
    if (last !== undefined && last.zero === zero) last.length += next - at;
    else runs.push({ offset: at, length: next - at, zero });
    at = next;
  }
  return runs;
}
