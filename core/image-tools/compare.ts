/**
 * qemu-img compare: whether two images read the same, walking both backing
 * chains' block status so that ranges both report as zeroes are not read.
 * A range allocated on one side only must read as zeroes on that side. With
 * different sizes, the extra part of the larger image must be zeroes (a
 * warning is printed), unless `strict`, where sizes and block status must
 * match too.
 *
 * Exit codes: 0 identical, 1 different, 2 an image could not be opened
 * (see openImage's exitCode), 3 block status failed, 4 a read failed.
 */
import type { BlockNode } from '../block/block-node.js';
import { ChainCursor, chainStatus, type ChainExtent, STATUS_PROBE } from './chain-status.js';
import { firstDifferentSector, firstNonZeroSector } from './buffers.js';
import { ioErrorText } from './image-access.js';

/** qemu-img's IO_BUF_SIZE: compared at most this much at a time. */
const CHUNK = 2 * 1024 * 1024;

export interface CompareSide {
  node: BlockNode;
  /** The name messages use: the file name as given. */
  filename: string;
}

export interface CompareOutcome {
  exitCode: 0 | 1 | 3 | 4;
  /** Lines for stdout ("Warning: Image size mismatch!", "Content mismatch at offset N!", "Images are identical."). */
  lines: string[];
  /** The error for stderr (exit codes 3 and 4). */
  error?: string;
}

class CompareStop extends Error {
  constructor(
    readonly exitCode: 1 | 3 | 4,
    readonly line?: string,
    readonly failure?: string,
  ) {
    super(line ?? failure);
  }
}

async function read(side: CompareSide, offset: number, buf: Buffer): Promise<void> {
  try {
    await side.node.read(offset, buf);
  } catch (error) {
    throw new CompareStop(4, undefined, `Error while reading offset ${offset} of ${side.filename}: ${ioErrorText(error)}`);
  }
}

async function statusAt(side: CompareSide, cursor: ChainCursor, offset: number): Promise<ChainExtent> {
  try {
    return await cursor.at(offset);
  } catch {
    throw new CompareStop(3, undefined, `Sector allocation test failed for ${side.filename}`);
  }
}

/** qemu-img's check_empty_sectors(): `[offset, offset + length)` of `side` must read as zeroes. */
async function checkEmpty(side: CompareSide, offset: number, length: number): Promise<void> {
  const buf = Buffer.alloc(length);
  await read(side, offset, buf);
  const index = firstNonZeroSector(buf);
  if (index >= 0) throw new CompareStop(1, `Content mismatch at offset ${offset + index}!`);
}

/** The status bits strict mode compares (QEMU compares the whole status word). */
function statusWord(e: ChainExtent): string {
  return `${e.present}/${e.zero}/${e.data}/${e.hostOffset !== undefined}`;
}

async function compareCommon(a: CompareSide, b: CompareSide, total: number, strict: boolean): Promise<void> {
  const cursorA = new ChainCursor(a.node);
  const cursorB = new ChainCursor(b.node);
  for (let offset = 0; offset < total; ) {
    const ea = await statusAt(a, cursorA, offset);
    const eb = await statusAt(b, cursorB, offset);
    let chunk = Math.min(ea.offset + ea.length, eb.offset + eb.length, total) - offset;
    if (strict && statusWord(ea) !== statusWord(eb)) {
      throw new CompareStop(1, `Strict mode: Offset ${offset} block status mismatch!`);
    }
    if (ea.zero && eb.zero) {
      // Both read as zeroes.
    } else if (ea.present === eb.present) {
      if (ea.present) {
        chunk = Math.min(chunk, CHUNK);
        const bufA = Buffer.alloc(chunk);
        const bufB = Buffer.alloc(chunk);
        await read(a, offset, bufA);
        await read(b, offset, bufB);
        const index = firstDifferentSector(bufA, bufB);
        if (index >= 0) throw new CompareStop(1, `Content mismatch at offset ${offset + index}!`);
      }
    } else {
      chunk = Math.min(chunk, CHUNK);
      await checkEmpty(ea.present ? a : b, offset, chunk);
    }
    offset += chunk;
  }
}

/** What the larger image has beyond the smaller one's end must read as zeroes. */
async function compareExtra(over: CompareSide, from: number): Promise<void> {
  const end = over.node.length;
  for (let offset = from; offset < end; ) {
    let extents: ChainExtent[];
    try {
      extents = await chainStatus(over.node, offset, Math.min(STATUS_PROBE, end - offset));
    } catch {
      throw new CompareStop(3, undefined, `Sector allocation test failed for ${over.filename}`);
    }
    if (extents.length === 0) throw new CompareStop(3, undefined, `Sector allocation test failed for ${over.filename}`);
    for (const e of extents) {
      if (e.present) {
        for (let at = e.offset; at < e.offset + e.length; at += CHUNK) {
          await checkEmpty(over, at, Math.min(CHUNK, e.offset + e.length - at));
        }
      }
      offset = e.offset + e.length;
    }
  }
}

export async function compareImages(a: CompareSide, b: CompareSide, options: { strict?: boolean } = {}): Promise<CompareOutcome> {
  const strict = options.strict ?? false;
  const lines: string[] = [];
  const sizeA = a.node.length;
  const sizeB = b.node.length;
  try {
    if (strict && sizeA !== sizeB) throw new CompareStop(1, 'Strict mode: Image size mismatch!');
    await compareCommon(a, b, Math.min(sizeA, sizeB), strict);
    if (sizeA !== sizeB) {
      lines.push('Warning: Image size mismatch!');
      await compareExtra(sizeA > sizeB ? a : b, Math.min(sizeA, sizeB));
    }
  } catch (error) {
    if (!(error instanceof CompareStop)) throw error;
    if (error.line !== undefined) lines.push(error.line);
    const outcome: CompareOutcome = { exitCode: error.exitCode, lines };
    if (error.failure !== undefined) outcome.error = error.failure;
    return outcome;
  }
  lines.push('Images are identical.');
  return { exitCode: 0, lines };
}
