/**
 * Arguments of block-stream (QEMU 7.2's schema), in QEMU's member order.
 * 7.2 has no `backing-mask-protocol` (9.0).
 */
import { BlockdevOnError } from '../../core/job/error-policy.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const BlockStream = Qapi.struct('BlockStream', {
  'job-id': Qapi.optional(Qapi.str({ description: 'the job id; default: the device name of the node' })),
  device: Qapi.str({ description: 'the node to stream into (the top of the chain, or an image below it), by device or node name' }),
  base: Qapi.optional(
    Qapi.str({ description: 'the backing file (by file name) to keep: data above it is copied, it becomes the backing file; default: none (the whole chain is copied)' }),
  ),
  'base-node': Qapi.optional(Qapi.str({ description: 'the same, by node name' })),
  'backing-file': Qapi.optional(
    Qapi.str({ description: "the backing file name written into the image (only with a base); default: the base's file name" }),
  ),
  bottom: Qapi.optional(Qapi.str({ description: 'the last node to copy from (not a filter); the node below it becomes the backing file' })),
  speed: Qapi.optional(Qapi.int({ description: 'rate limit in bytes per second, 0 = unlimited', default: 0 })),
  'on-error': Qapi.optional({ ...BlockdevOnError, description: 'what to do on an I/O error (reported as a read error)', default: 'report' }),
  'filter-node-name': Qapi.optional(Qapi.str({ description: 'name of the copy-on-read filter node put above the device; default: #blockNNN' })),
  'auto-finalize': Qapi.optional(Qapi.bool({ description: 'finalise (and rewrite the backing link) without job-finalize', default: true })),
  'auto-dismiss': Qapi.optional(Qapi.bool({ description: 'disappear once concluded', default: true })),
});

export type BlockStreamArgs = Static<typeof BlockStream>;
