/**
 * I/O accounting of a device (QEMU's BlockAcctStats, block/accounting.c):
 * bytes, operations and total latency per request type for requests that
 * completed, failed ones and invalid ones (rejected at submission, so
 * without latency), and when the device was last used. QEMU's device models
 * account their guest requests; blocklayer's devices have no device model,
 * so the backend accounts what comes through it.
 *
 * The hot path only adds to preallocated typed arrays: no per-request
 * object. Times come from performance.now() (a double, no BigInt), taken
 * once at start and once at the end of a request.
 */
import { performance } from 'node:perf_hooks';

/** QEMU's BlockAcctType (indexes of the counters). */
export const AcctType = { Read: 0, Write: 1, Flush: 2, Unmap: 3 } as const;
export type AcctType = (typeof AcctType)[keyof typeof AcctType];

/** QEMU's BlockDeviceStats, members in QEMU 7.2's order. */
export interface BlockDeviceStats {
  rd_bytes: number;
  wr_bytes: number;
  unmap_bytes: number;
  rd_operations: number;
  wr_operations: number;
  flush_operations: number;
  unmap_operations: number;
  rd_total_time_ns: number;
  wr_total_time_ns: number;
  flush_total_time_ns: number;
  unmap_total_time_ns: number;
  wr_highest_offset: number;
  rd_merged: number;
  wr_merged: number;
  unmap_merged: number;
  idle_time_ns?: number;
  failed_rd_operations: number;
  failed_wr_operations: number;
  failed_flush_operations: number;
  failed_unmap_operations: number;
  invalid_rd_operations: number;
  invalid_wr_operations: number;
  invalid_flush_operations: number;
  invalid_unmap_operations: number;
  account_invalid: boolean;
  account_failed: boolean;
  timed_stats: never[];
}

/** The stats of something nothing accounts for (a node): zeros, as bdrv_query_bds_stats starts from. */
export function emptyDeviceStats(wrHighestOffset: number): BlockDeviceStats {
  return {
    rd_bytes: 0,
    wr_bytes: 0,
    unmap_bytes: 0,
    rd_operations: 0,
    wr_operations: 0,
    flush_operations: 0,
    unmap_operations: 0,
    rd_total_time_ns: 0,
    wr_total_time_ns: 0,
    flush_total_time_ns: 0,
    unmap_total_time_ns: 0,
    wr_highest_offset: wrHighestOffset,
    rd_merged: 0,
    wr_merged: 0,
    unmap_merged: 0,
    failed_rd_operations: 0,
    failed_wr_operations: 0,
    failed_flush_operations: 0,
    failed_unmap_operations: 0,
    invalid_rd_operations: 0,
    invalid_wr_operations: 0,
    invalid_flush_operations: 0,
    invalid_unmap_operations: 0,
    account_invalid: false,
    account_failed: false,
    timed_stats: [],
  };
}

const TYPES = 4;
const NS_PER_MS = 1e6;

export class BlockAcctStats {
  private readonly bytes = new Float64Array(TYPES);
  private readonly ops = new Float64Array(TYPES);
  private readonly failedOps = new Float64Array(TYPES);
  private readonly invalidOps = new Float64Array(TYPES);
  /** Milliseconds (performance.now()), summed; reported in ns. */
  private readonly totalTime = new Float64Array(TYPES);
  /** performance.now() of the last accounted access; -1 before any. */
  private lastAccess = -1;

  /**
   * QEMU's stats-account-invalid / stats-account-failed, on by default:
   * whether invalid and failed requests count as an access (idle time), and
   * failed ones add their latency.
   */
  constructor(
    readonly accountInvalid = true,
    readonly accountFailed = true,
  ) {}

  /** The start time of a request, to hand back to done() or failed(). */
  start(): number {
    return performance.now();
  }

  /** block_acct_done: a request of `bytes` started at `start` succeeded. */
  done(type: AcctType, bytes: number, start: number): void {
    const now = performance.now();
    this.bytes[type]! += bytes;
    this.ops[type]!++;
    this.totalTime[type]! += now - start;
    this.lastAccess = now;
  }

  /** block_acct_failed: the request failed in the layers below. */
  failed(type: AcctType, start: number): void {
    this.failedOps[type]!++;
    if (!this.accountFailed) return;
    const now = performance.now();
    this.totalTime[type]! += now - start;
    this.lastAccess = now;
  }

  /** block_acct_invalid: the request was refused before any I/O (out of range), so no latency. */
  invalid(type: AcctType): void {
    this.invalidOps[type]!++;
    if (this.accountInvalid) this.lastAccess = performance.now();
  }

  /** bdrv_query_blk_stats: the device's counters, with the wr_highest_offset of its node. */
  report(wrHighestOffset: number): BlockDeviceStats {
    const ns = (type: AcctType): number => Math.round(this.totalTime[type]! * NS_PER_MS);
    // QEMU reports idle time only once the device was accessed.
    const idle = this.lastAccess < 0 ? {} : { idle_time_ns: Math.round((performance.now() - this.lastAccess) * NS_PER_MS) };
    return {
      rd_bytes: this.bytes[AcctType.Read]!,
      wr_bytes: this.bytes[AcctType.Write]!,
      unmap_bytes: this.bytes[AcctType.Unmap]!,
      rd_operations: this.ops[AcctType.Read]!,
      wr_operations: this.ops[AcctType.Write]!,
      flush_operations: this.ops[AcctType.Flush]!,
      unmap_operations: this.ops[AcctType.Unmap]!,
      rd_total_time_ns: ns(AcctType.Read),
      wr_total_time_ns: ns(AcctType.Write),
      flush_total_time_ns: ns(AcctType.Flush),
      unmap_total_time_ns: ns(AcctType.Unmap),
      wr_highest_offset: wrHighestOffset,
      rd_merged: 0,
      wr_merged: 0,
      unmap_merged: 0,
      ...idle,
      failed_rd_operations: this.failedOps[AcctType.Read]!,
      failed_wr_operations: this.failedOps[AcctType.Write]!,
      failed_flush_operations: this.failedOps[AcctType.Flush]!,
      failed_unmap_operations: this.failedOps[AcctType.Unmap]!,
      invalid_rd_operations: this.invalidOps[AcctType.Read]!,
      invalid_wr_operations: this.invalidOps[AcctType.Write]!,
      invalid_flush_operations: this.invalidOps[AcctType.Flush]!,
      invalid_unmap_operations: this.invalidOps[AcctType.Unmap]!,
      account_invalid: this.accountInvalid,
      account_failed: this.accountFailed,
      timed_stats: [],
    };
  }
}
