/**
 * Sizes of the L2 and refcount block caches from the open options, with
 * QEMU's defaults, rules and messages (read_cache_sizes and
 * qcow2_update_options_prepare): the L2 cache covers the whole image up to
 * 32 MiB, in 4 KiB entries when it cannot; the refcount cache holds 4
 * clusters; `cache-size` splits a combined budget.
 */
import { BlockLayerError } from '../../core/errors.js';
import type { Qcow2Options } from './options.js';

const DEFAULT_L2_CACHE_MAX_SIZE = 32 * 1024 * 1024;
const MIN_L2_CACHE_ENTRIES = 2;
const MIN_REFCOUNT_CACHE_CLUSTERS = 4;
const INT_MAX = 2 ** 31 - 1;

export interface CacheSizes {
  /** Entries of the L2 cache. */
  l2Entries: number;
  /** Bytes per L2 cache entry (a slice of an L2 table). */
  l2EntrySize: number;
  /** Clusters the refcount block cache holds. */
  refcountEntries: number;
}

export function cacheSizes(options: Qcow2Options, clusterSize: number, virtualSize: number): CacheSizes {
  const minRefcountCache = MIN_REFCOUNT_CACHE_CLUSTERS * clusterSize;
  const maxL2Cache = Math.ceil((Math.ceil(virtualSize / clusterSize) * 8) / clusterSize) * clusterSize;
  const combined = options['cache-size'];
  const l2Setting = options['l2-cache-size'];
  const refcountSetting = options['refcount-cache-size'];
  let l2Size = Math.min(maxL2Cache, l2Setting ?? DEFAULT_L2_CACHE_MAX_SIZE);
  let refcountSize = refcountSetting ?? 0;
  if (combined !== undefined) {
    if (l2Setting !== undefined && refcountSetting !== undefined) {
      throw new BlockLayerError('cache-size, l2-cache-size and refcount-cache-size may not be set at the same time');
    }
    if (l2Setting !== undefined && l2Setting > combined) throw new BlockLayerError('l2-cache-size may not exceed cache-size');
    if (refcountSize > combined) throw new BlockLayerError('refcount-cache-size may not exceed cache-size');
    if (l2Setting !== undefined) {
      refcountSize = combined - l2Size;
    } else if (refcountSetting !== undefined) {
      l2Size = combined - refcountSize;
    } else if (combined >= maxL2Cache + minRefcountCache) {
      l2Size = maxL2Cache;
      refcountSize = combined - l2Size;
    } else {
      refcountSize = Math.min(combined, minRefcountCache);
      l2Size = combined - refcountSize;
    }
  }
  let l2EntrySize = options['l2-cache-entry-size'] ?? clusterSize;
  if (l2Size < maxL2Cache && options['l2-cache-entry-size'] === undefined) l2EntrySize = Math.min(clusterSize, 4096);
  if (l2EntrySize < 512 || l2EntrySize > clusterSize || (l2EntrySize & (l2EntrySize - 1)) !== 0) {
    throw new BlockLayerError(
      `L2 cache entry size must be a power of two between 512 and the cluster size (${clusterSize})`,
    );
  }
  const l2Entries = Math.max(MIN_L2_CACHE_ENTRIES, Math.floor(l2Size / l2EntrySize));
  if (l2Entries > INT_MAX) throw new BlockLayerError('L2 cache size too big');
  const refcountEntries = Math.max(MIN_REFCOUNT_CACHE_CLUSTERS, Math.floor(refcountSize / clusterSize));
  if (refcountEntries > INT_MAX) throw new BlockLayerError('Refcount cache size too big');
  return { l2Entries, l2EntrySize, refcountEntries };
}
