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
  /**
   * Cut data as qemu-img cuts its requests: from the start of each data
   * extent of the source, `maxData` at a time (each cut moved up to the
   * next cluster boundary), not at multiples of `maxData`. Where a request
   * ends decides where a format puts metadata it allocates meanwhile (a
   * qcow2 refcount block goes after the request that needed it), so the
   * layout follows qemu-img's. An operation may then be up to `align`
   * longer than `maxData`.
   */
  fromExtents?: boolean;
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
 * neighbours of a kind merged, data cut at multiples of `maxData` (or from
 * each data extent's start: `fromExtents`).
 */
export async function* planOps(source: AsyncIterable<CopyOp>, options: PlanOptions): AsyncGenerator<CopyOp> {
  const { align, maxData } = options;
  let covered = 0;
  let pending: CopyOp | undefined;
  /** Where the cuts of the data run count from. */
  let base = 0;
  /** A data extent right after another: qemu-img's request starts there, so the data before it ends (at the cluster boundary). */
  let extentCut: number | undefined;
  let previousKind: CopyOp['kind'] | undefined;
  const nextCut = (after: number): number => {
    if (extentCut !== undefined && extentCut > after) return extentCut;
    return up(base + Math.max(1, Math.floor((after - base) / maxData) + 1) * maxData, align);
  };
  for await (const raw of source) {
    if (raw.length <= 0) continue;
    const op = options.zeroAsData && raw.kind === 'zero' ? { ...raw, kind: 'data' as const } : raw;
    if (options.fromExtents === true && op.kind === 'data') {
      base = op.offset;
      extentCut = previousKind === 'data' ? up(op.offset, align) : undefined;
    }
    previousKind = op.kind;
    for (const piece of alignedPieces(op, align, options.end)) {
      const start = Math.max(piece.offset, covered);
      const pieceEnd = piece.offset + piece.length;
      if (pieceEnd <= start) continue;
      covered = pieceEnd;
      if (pending !== undefined && pending.kind === piece.kind && pending.offset + pending.length === start) {
        pending.length = pieceEnd - pending.offset;
      } else {
        if (pending !== undefined) yield pending;
        pending = { kind: piece.kind, offset: start, length: pieceEnd - start };
      }
      // Hand out the data up to each cut now; keep the rest, which may grow.
      for (let at = nextCut(pending.offset); pending.kind === 'data' && at < pending.offset + pending.length; at = nextCut(pending.offset)) {
        yield { kind: 'data', offset: pending.offset, length: at - pending.offset };
        pending = { kind: 'data', offset: at, length: pending.offset + pending.length - at };
      }
    }
  }
  if (pending !== undefined) yield pending;
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
