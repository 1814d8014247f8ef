/**
 * qemu-img dd: copies an image's data, from `skip` blocks of `bs` bytes on,
 * into a new image of any format, with dd(1)'s operands (`if=`, `of=`,
 * `bs=`, `count=`, `skip=`).
 *
 * The sizes are qemu-img 7.2's, which differ from dd(1)'s when both count
 * and skip are given: the input is cut at `count` blocks from its start,
 * not from the skip, and the output holds what lies between the skip and
 * that end (`bs=64k count=4 skip=2` copies bytes 128k-256k). A skip past
 * that end is reported and makes an empty image (exit code 0, as dd(1)).
 *
 * Everything is written as data, zeroes too (qemu-img dd neither asks for
 * block status nor looks for zeroes): a qcow2 output is allocated
 * throughout. The output is written in order, one request at a time, in
 * pieces of at most a MiB whatever `bs` is (bs only measures count and
 * skip; the bytes and a format's allocation order come out the same), so a
 * large bs costs no memory and a small one no time. Closing flushes it.
 */
import type { BlockLayer } from '../block-layer.js';
import { executeCreate, planCreate } from './create.js';
import { closeImage, cvtnum, type ImageRef, ImageToolError, ioErrorText, openImage, requireFormat } from './image-access.js';

const INT_MAX = 2n ** 31n - 1n;
const INT64_MAX = 2n ** 63n - 1n;
const PIECE = 1024 * 1024;

export interface DdRequest {
  /** The operands in the order given (`if=FILE`, `of=FILE`, `bs=BYTES`, `count=N`, `skip=N`); a later one overrides an earlier. */
  operands: readonly string[];
  /** -f: the input's format (required). */
  format?: string;
  /** -O: the output's format (default raw). */
  outputFormat?: string;
  /** -U: the input is opened with force-share=on. */
  forceShare?: boolean;
}

interface DdPlan {
  input: string;
  output: string;
  blockSize: bigint;
  count?: bigint;
  skip?: bigint;
}

/** The operands as qemu-img reads them, each checked as it comes. */
function parseOperands(operands: readonly string[]): DdPlan {
  const plan: Partial<DdPlan> = {};
  for (const operand of operands) {
    const split = operand.indexOf('=');
    const key = split < 0 ? operand : operand.slice(0, split);
    const value = operand.slice(split + 1);
    if (split < 0) throw new ImageToolError(`unrecognized operand ${key}`);
    if (key === 'if') plan.input = value;
    else if (key === 'of') plan.output = value;
    else if (key === 'bs') plan.blockSize = cvtnum('bs', value, 1n, INT_MAX);
    else if (key === 'count') plan.count = cvtnum('count', value, 0n, INT64_MAX);
    else if (key === 'skip') plan.skip = cvtnum('skip', value, 0n, INT64_MAX);
    else throw new ImageToolError(`unrecognized operand ${key}`);
  }
  if (plan.input === undefined || plan.output === undefined) throw new ImageToolError('Must specify both input and output files');
  return { blockSize: 512n, ...plan, input: plan.input, output: plan.output };
}

/**
 * The input's end (count blocks from its start, if that is shorter) and
 * where the copy starts; undefined start: the skip lies past that end.
 */
function copyRange(plan: DdPlan, inputSize: bigint): { end: bigint; start: bigint | undefined } {
  const { blockSize: bs, count, skip } = plan;
  const end = count !== undefined && count <= INT64_MAX / bs && count * bs < inputSize ? count * bs : inputSize;
  if (skip !== undefined && (skip > INT64_MAX / bs || end < skip * bs)) return { end, start: undefined };
  return { end, start: (skip ?? 0n) * bs };
}

/** Runs qemu-img dd; `warn` receives what qemu-img reports without failing (a skip past the end). */
export async function ddImage(layer: BlockLayer, request: DdRequest, warn: (message: string) => void): Promise<void> {
  const plan = parseOperands(request.operands);
  const source: ImageRef = { filename: plan.input, format: requireFormat(request.format), forceShare: request.forceShare ?? false };
  const input = await openImage(layer, source, { readOnly: true });
  try {
    const outputFormat = request.outputFormat ?? 'raw';
    if (layer.drivers.get(outputFormat) === undefined) throw new ImageToolError('Unknown file format');
    const { end, start } = copyRange(plan, BigInt(input.length));
    const size = Number(start === undefined ? 0n : end - start);
    await executeCreate(layer, await planCreate(layer, { filename: plan.output, format: outputFormat, size }), 'error while creating output image');
    const output = await openImage(layer, { filename: plan.output, format: outputFormat }, { readOnly: false });
    try {
      if (start === undefined) warn(`${plan.input}: cannot skip to specified offset`);
      const from = Number(start ?? end);
      const to = Number(end);
      const buf = Buffer.allocUnsafe(Math.min(PIECE, Math.max(0, to - from)));
      for (let at = from; at < to; at += buf.length) {
        const piece = buf.subarray(0, Math.min(buf.length, to - at));
        await input.read(at, piece).catch((error: unknown) => {
          throw new ImageToolError(`error while reading from input image file: ${ioErrorText(error)}`);
        });
        await output.write(at - from, piece).catch((error: unknown) => {
          throw new ImageToolError(`error while writing to output image file: ${ioErrorText(error)}`);
        });
      }
    } finally {
      await closeImage(layer, output);
    }
  } finally {
    await closeImage(layer, input);
  }
}
