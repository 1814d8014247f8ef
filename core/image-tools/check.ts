/**
 * qemu-img check: the driver's `check` on a node opened for it (read-only,
 * or read-write to repair), QEMU's ImageCheck report, its human text and
 * its exit codes: 0 consistent, 1 check not completed, 2 corruptions,
 * 3 leaks only, 63 no check for this format.
 */
import type { BlockNode } from '../block/block-node.js';
import type { CheckRepair, ImageCheckResult } from '../block/driver.js';
import { ImageToolError } from './image-access.js';
import { qemuJsonPretty } from './qemu-text.js';
import { errorText } from '../errors.js';

/** QEMU's ImageCheck; the optional counts are present only when non-zero. */
export interface ImageCheckReport {
  filename: string;
  format: string;
  'check-errors': number;
  'image-end-offset'?: number;
  corruptions?: number;
  leaks?: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
}

export interface CheckOutcome {
  /** What was found (after repairs: what the second check found, with the first one's fixed counts). */
  report: ImageCheckReport;
  /** The driver's lines for stderr ("Leaked cluster …", "ERROR …", "Repairing …"), both passes. */
  messages: string[];
  /** Set when repairs were made: the counts qemu-img announces before double-checking. */
  repaired?: { leaks: number; corruptions: number };
  exitCode: 0 | 1 | 2 | 3;
}

/**
 * A check that could not complete (exit code 1). qemu-img has printed the
 * driver's lines as the check went (`messages`), then its error reports
 * (`reports`, e.g. `ERROR writing refblock: Input/output error`), then this
 * error's message, `Check failed: <strerror>`.
 */
export class CheckFailedError extends ImageToolError {
  constructor(
    message: string,
    readonly messages: readonly string[],
    readonly reports: readonly string[],
    /** Set when the double check after repairs failed: qemu-img has announced the repairs on stdout (human output). */
    readonly repaired?: CheckOutcome['repaired'],
  ) {
    super(message);
    this.name = 'CheckFailedError';
  }
}

/** The lines a driver's failed check carries: `messages` printed as they are, `reports` as errors. */
function failureLines(error: unknown): { messages: string[]; reports: string[] } {
  const lines = (key: string): string[] => {
    const value = (error as Record<string, unknown> | null)?.[key];
    return Array.isArray(value) ? value.filter((line): line is string => typeof line === 'string') : [];
  };
  return { messages: lines('messages'), reports: lines('reports') };
}

/** The exit code of a format without checks. */
export const NO_CHECK_EXIT = 63;

function report(filename: string, format: string, result: ImageCheckResult): ImageCheckReport {
  const out: ImageCheckReport = { filename, format, 'check-errors': result.checkErrors };
  const optional: [keyof ImageCheckReport, number | undefined][] = [
    ['image-end-offset', result.imageEndOffset],
    ['corruptions', result.corruptions],
    ['leaks', result.leaks],
    ['corruptions-fixed', result.corruptionsFixed],
    ['leaks-fixed', result.leaksFixed],
    ['total-clusters', result.totalClusters],
    ['allocated-clusters', result.allocatedClusters],
    ['fragmented-clusters', result.fragmentedClusters],
    ['compressed-clusters', result.compressedClusters],
  ];
  for (const [key, value] of optional) if (value !== undefined && value !== 0) (out as unknown as Record<string, number>)[key] = value;
  return out;
}

/**
 * Checks the image behind `node` (opened read-write when `repair` is not
 * 'none'); `filename` is the name the report shows. Throws ImageToolError
 * with exit code 63 when the format has no check, and CheckFailedError
 * (exit code 1) when the check fails: a driver's check error may carry
 * `messages` and `reports` (string arrays), the lines qemu-img would have
 * printed before its `Check failed`.
 */
export async function checkImage(node: BlockNode, filename: string, repair: CheckRepair): Promise<CheckOutcome> {
  const { driver } = node;
  if (driver.check === undefined) throw new ImageToolError('This image format does not support checks', NO_CHECK_EXIT);
  const messages: string[] = [];
  let repaired: CheckOutcome['repaired'];
  const run = async (mode: CheckRepair): Promise<ImageCheckResult> => {
    try {
      return await driver.check!(node.driverState, mode);
    } catch (error) {
      const lines = failureLines(error);
      throw new CheckFailedError(`Check failed: ${errorText(error)}`, [...messages, ...lines.messages], lines.reports, repaired);
    }
  };
  let result = await run(repair);
  messages.push(...result.messages);
  if (result.leaksFixed > 0 || result.corruptionsFixed > 0) {
    repaired = { leaks: result.leaksFixed, corruptions: result.corruptionsFixed };
    const again = await run('none');
    messages.push(...again.messages);
    result = { ...again, leaksFixed: result.leaksFixed, corruptionsFixed: result.corruptionsFixed };
  }
  const exitCode = result.checkErrors > 0 ? 1 : result.corruptions > 0 ? 2 : result.leaks > 0 ? 3 : 0;
  const outcome: CheckOutcome = { report: report(filename, driver.name, result), messages, exitCode };
  if (repaired !== undefined) outcome.repaired = repaired;
  return outcome;
}

/** `--output=json`. */
export function formatCheckJson(outcome: CheckOutcome): string {
  return qemuJsonPretty(outcome.report);
}

const percent = (part: number, whole: number): string => ((part * 100) / whole).toFixed(2);

/** What qemu-img prints on stdout (human output) between repairing and checking again. */
export function formatRepairNotice(repaired: NonNullable<CheckOutcome['repaired']>): string {
  return (
    'The following inconsistencies were found and repaired:\n\n' +
    `    ${repaired.leaks} leaked clusters\n` +
    `    ${repaired.corruptions} corruptions\n\n` +
    'Double checking the fixed image now...\n'
  );
}

/** Human text, as qemu-img prints it on stdout (the repair notice first, when repairs were made). */
export function formatCheckHuman(outcome: CheckOutcome): string {
  const r = outcome.report;
  let text = outcome.repaired === undefined ? '' : formatRepairNotice(outcome.repaired);
  const corruptions = r.corruptions ?? 0;
  const leaks = r.leaks ?? 0;
  const checkErrors = r['check-errors'];
  if (corruptions === 0 && leaks === 0 && checkErrors === 0) {
    text += 'No errors were found on the image.\n';
  } else {
    if (corruptions > 0) {
      text += `\n${corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    }
    if (leaks > 0) {
      text += `\n${leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    }
    if (checkErrors > 0) text += `\n${checkErrors} internal errors have occurred during the check.\n`;
  }
  const total = r['total-clusters'] ?? 0;
  const allocated = r['allocated-clusters'] ?? 0;
  if (total !== 0 && allocated !== 0) {
    text +=
      `${allocated}/${total} = ${percent(allocated, total)}% allocated, ` +
      `${percent(r['fragmented-clusters'] ?? 0, allocated)}% fragmented, ` +
      `${percent(r['compressed-clusters'] ?? 0, allocated)}% compressed clusters\n`;
  }
  if (r['image-end-offset'] !== undefined) text += `Image end offset: ${r['image-end-offset']}\n`;
  return text;
}

/** qemu-img's closing line on stderr when the check had internal errors (exit code 1). */
export const CHECK_FAILED = 'Check failed';
