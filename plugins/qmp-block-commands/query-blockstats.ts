/**
 * query-blockstats: I/O statistics of every device, or with `query-nodes`
 * of every node (QEMU 7.2's qmp_query_blockstats). Only devices account
 * I/O (their BlockAcctStats); a node reports zeros but for the furthest
 * write it saw (wr_highest_offset). Each entry nests the stats of the
 * node's data child as `parent`; a device's entry also nests the next node
 * of its chain as `backing`, and skips the filters jobs put in without a
 * name at every level, as query-block does (iotest 040 test_implicit_node).
 * A node whose driver keeps counters of its own adds them as
 * `driver-specific` (the file driver's discards, as QEMU's file-posix).
 */
import { inject, injectable } from 'inversify';
import { type BlockDeviceStats, emptyDeviceStats } from '../../core/block/block-accounting.js';
import { filteredChild, nextInChain, skipImplicitFilters } from '../../core/block/backing-chain.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';
import type { QapiValidator } from '../../core/schema/qapi-validator.js';
import { TOKENS } from '../../core/tokens.js';

export interface BlockStats {
  device?: string;
  'node-name'?: string;
  stats: BlockDeviceStats;
  'driver-specific'?: { driver: string } & Record<string, unknown>;
  parent?: BlockStats;
  backing?: BlockStats;
}

const args = Qapi.struct('q_obj_query-blockstats-arg', {
  'query-nodes': Qapi.optional(Qapi.bool({ description: 'list every node instead of every device', default: false })),
});

const int = Qapi.int;
const BLOCK_DEVICE_STATS = Qapi.struct('BlockDeviceStats', {
  rd_bytes: int(),
  wr_bytes: int(),
  unmap_bytes: int(),
  rd_operations: int(),
  wr_operations: int(),
  flush_operations: int(),
  unmap_operations: int(),
  rd_total_time_ns: int(),
  wr_total_time_ns: int(),
  flush_total_time_ns: int(),
  unmap_total_time_ns: int(),
  wr_highest_offset: int(),
  rd_merged: int(),
  wr_merged: int(),
  unmap_merged: int(),
  idle_time_ns: Qapi.optional(int()),
  failed_rd_operations: int(),
  failed_wr_operations: int(),
  failed_flush_operations: int(),
  failed_unmap_operations: int(),
  invalid_rd_operations: int(),
  invalid_wr_operations: int(),
  invalid_flush_operations: int(),
  invalid_unmap_operations: int(),
  account_invalid: Qapi.bool(),
  account_failed: Qapi.bool(),
  // No latency intervals are configured (QEMU's stats-intervals), so the list stays empty.
  timed_stats: Qapi.list(Qapi.struct('BlockDeviceTimedStats', {})),
});

const BLOCK_STATS_NAME = 'BlockStats';
const BLOCK_STATS = Qapi.struct(BLOCK_STATS_NAME, {
  device: Qapi.optional(Qapi.str()),
  'node-name': Qapi.optional(Qapi.str()),
  stats: BLOCK_DEVICE_STATS,
  // QEMU's BlockStatsSpecific is a union on `driver`; only the file driver's branch exists here.
  'driver-specific': Qapi.optional(
    Qapi.struct('BlockStatsSpecificFile', {
      driver: Qapi.str({ description: "the driver: 'file'" }),
      'discard-nb-ok': int(),
      'discard-nb-failed': int(),
      'discard-bytes-ok': int(),
    }),
  ),
  parent: Qapi.optional(Qapi.ref<BlockStats>(BLOCK_STATS_NAME)),
  backing: Qapi.optional(Qapi.ref<BlockStats>(BLOCK_STATS_NAME)),
});

/**
 * The child holding the node's data, whose stats are its `parent`
 * (bdrv_primary_child, else the only data child): a filter's filtered
 * child, else the one child that is not `backing` (a format's `file`);
 * none for a protocol node or a node with several (quorum).
 */
function dataChild(node: BlockNode): BlockNode | undefined {
  if (node.driver.kind === 'filter') return filteredChild(node);
  let found: BlockNode | undefined;
  for (const [role, edge] of node.children) {
    if (role === 'backing') continue;
    if (found !== undefined) return undefined;
    found = edge.node;
  }
  return found;
}

/** bdrv_query_bds_stats: a node's entry; `deviceLevel` hides implicit filters and adds `backing`. */
function nodeStats(given: BlockNode, deviceLevel: boolean, device?: BlockDeviceStats): BlockStats {
  const node = deviceLevel ? skipImplicitFilters(given) : given;
  const entry: BlockStats = { 'node-name': node.nodeName, stats: device ?? emptyDeviceStats(node.wrHighestOffset) };
  const specific = node.driver.specificStats?.(node.driverState);
  if (specific !== undefined) entry['driver-specific'] = specific;
  const parent = dataChild(node);
  if (parent !== undefined) entry.parent = nodeStats(parent, deviceLevel);
  const below = deviceLevel ? nextInChain(node) : undefined;
  if (below !== undefined) entry.backing = nodeStats(below, deviceLevel);
  return entry;
}

@injectable()
export class QueryBlockstatsCommand implements QmpCommand<Static<typeof args>> {
  readonly name = 'query-blockstats';
  readonly summary = 'I/O statistics of every device, or of every node';
  readonly args = args;
  readonly returns = Qapi.list(Qapi.ref<BlockStats>(BLOCK_STATS_NAME));

  constructor(
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
    @inject(TOKENS.QapiValidator) validator: QapiValidator,
  ) {
    validator.define({ ...BLOCK_STATS, $id: BLOCK_STATS_NAME });
  }

  execute(input: Static<typeof args>): BlockStats[] {
    // Oldest node first: the reverse of query-named-block-nodes, as QEMU 7.2 lists them.
    if (input['query-nodes'] === true) return this.graph.list().map((node) => nodeStats(node, false));
    return this.graph.listBackends().map((backend) => {
      const node = skipImplicitFilters(backend.node);
      return { device: backend.name, ...nodeStats(node, true, backend.stats.report(node.wrHighestOffset)) };
    });
  }
}
