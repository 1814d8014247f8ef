/**
 * Arguments of block-commit (QEMU 7.2's schema), in QEMU's member order:
 * it decides which problem is reported first. `base` and `top` are
 * deprecated in QEMU for `base-node` and `top-node`; 7.2 has no
 * `backing-mask-protocol` (9.0).
 */
import { BlockdevOnError } from '../../core/job/error-policy.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const BlockCommit = Qapi.struct('BlockCommit', {
  'job-id': Qapi.optional(Qapi.str({ description: 'the job id; default: the device name of the root node' })),
  device: Qapi.str({ description: 'the root node of the chain (the active layer), by device or node name' }),
  'base-node': Qapi.optional(Qapi.str({ description: 'the image to commit into, by node name; default: the bottom-most image' })),
  base: Qapi.optional(Qapi.str({ description: 'the same, by file name (deprecated in QEMU)' })),
  'top-node': Qapi.optional(
    Qapi.str({ description: 'the topmost image to commit, by node name; default: the active layer (an active commit)' }),
  ),
  top: Qapi.optional(Qapi.str({ description: 'the same, by file name (deprecated in QEMU)' })),
  'backing-file': Qapi.optional(
    Qapi.str({ description: "the backing file name written into the image above `top` (not for an active commit); default: the base's file name" }),
  ),
  speed: Qapi.optional(Qapi.int({ description: 'rate limit in bytes per second, 0 = unlimited', default: 0 })),
  'on-error': Qapi.optional({ ...BlockdevOnError, description: 'what to do on an I/O error (ignore: retry)', default: 'report' }),
  'filter-node-name': Qapi.optional(
    Qapi.str({ description: 'name of the filter node put above `top` (commit_top, or mirror_top for an active commit); default: #blockNNN' }),
  ),
  'auto-finalize': Qapi.optional(Qapi.bool({ description: 'finalise (and rewrite the chain) without job-finalize', default: true })),
  'auto-dismiss': Qapi.optional(Qapi.bool({ description: 'disappear once concluded', default: true })),
});

export type BlockCommitArgs = Static<typeof BlockCommit>;
