/**
 * The members every node has whatever its driver (QEMU's BlockdevOptions
 * base), in QEMU's order: `driver` first, then these. The driver registry
 * puts them in front of each driver's own members.
 */
import { Qapi, type Static } from '../schema/qapi.js';

export const BlockdevDiscardOptions = Qapi.enum('BlockdevDiscardOptions', ['ignore', 'unmap']);
export const BlockdevDetectZeroesOptions = Qapi.enum('BlockdevDetectZeroesOptions', ['off', 'on', 'unmap']);

export const BlockdevCacheOptions = Qapi.struct('BlockdevCacheOptions', {
  direct: Qapi.optional(
    Qapi.bool({ description: 'bypass the host page cache (O_DIRECT); only off is supported', default: false }),
  ),
  'no-flush': Qapi.optional(Qapi.bool({ description: 'ignore flush requests', default: false })),
});

export const baseNodeMembers = {
  'node-name': Qapi.optional(Qapi.str({ description: 'the node name; required for the node blockdev-add creates' })),
  discard: Qapi.optional({ ...BlockdevDiscardOptions, description: 'pass discard requests down (unmap) or drop them', default: 'ignore' }),
  cache: Qapi.optional({ ...BlockdevCacheOptions, description: 'cache mode' }),
  'read-only': Qapi.optional(Qapi.bool({ description: 'open the node read-only', default: false })),
  'auto-read-only': Qapi.optional(
    Qapi.bool({ description: 'fall back to read-only if the image cannot be opened read-write', default: false }),
  ),
  'force-share': Qapi.optional(
    Qapi.bool({
      description: 'share every permission with other users, other processes included (read-only nodes only)',
      default: false,
    }),
  ),
  'detect-zeroes': Qapi.optional({
    ...BlockdevDetectZeroesOptions,
    description: 'turn writes of zeroes into write-zeroes requests',
    default: 'off',
  }),
};

export type BaseNodeOptions = {
  [K in keyof typeof baseNodeMembers]?: Static<(typeof baseNodeMembers)[K]>;
};

/** What the node keeps of the base members once defaults are applied. */
export interface NodeSettings {
  readOnly: boolean;
  /** `read-only` was given for this node: a reopen of its parent leaves it as it is (QEMU's explicit options). */
  readOnlyGiven?: boolean;
  autoReadOnly: boolean;
  discard: 'ignore' | 'unmap';
  detectZeroes: 'off' | 'on' | 'unmap';
  noFlush: boolean;
  /** force-share: the node's users let others have every permission (permissions.ts); children inherit it, as in QEMU. */
  forceShare: boolean;
}

/**
 * The node's settings; `read-only`, `cache.no-flush` and `force-share` not
 * given by the user are inherited from the parent (QEMU opens the children of a
 * read-only node read-only, and bdrv_inherited_options passes cache.direct
 * and cache.no-flush down: a format node with no-flush does not flush its
 * file either). A child opened with its parent other than a backing file
 * unmaps unless told otherwise (bdrv_inherited_options again: the parent
 * already applies its own discard policy, so what it passes down is meant).
 */
export function nodeSettings(
  options: BaseNodeOptions,
  given: BaseNodeOptions,
  inheritReadOnly: boolean,
  { inheritNoFlush = false, inheritForceShare = false, childUnmaps = false } = {},
): NodeSettings {
  return {
    readOnly: given['read-only'] ?? inheritReadOnly,
    readOnlyGiven: given['read-only'] !== undefined,
    autoReadOnly: options['auto-read-only'] ?? false,
    discard: given.discard ?? (childUnmaps ? 'unmap' : (options.discard ?? 'ignore')),
    detectZeroes: options['detect-zeroes'] ?? 'off',
    noFlush: given.cache?.['no-flush'] ?? (inheritNoFlush || (options.cache?.['no-flush'] ?? false)),
    forceShare: given['force-share'] ?? inheritForceShare,
  };
}
