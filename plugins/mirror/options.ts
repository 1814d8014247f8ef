/**
 * Arguments of blockdev-mirror and drive-mirror (QEMU 7.2's BlockdevMirror
 * and DriveMirror), in QEMU's member order: it decides which problem is
 * reported first. blockdev-mirror has no `unmap` in 7.2 (it always unmaps).
 */
import { BlockdevOnError } from '../../core/job/error-policy.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const MirrorSyncMode = Qapi.enum('MirrorSyncMode', ['top', 'full', 'none', 'incremental', 'bitmap']);
export const MirrorCopyMode = Qapi.enum('MirrorCopyMode', ['background', 'write-blocking']);
export const NewImageMode = Qapi.enum('NewImageMode', ['existing', 'absolute-paths']);

const jobId = Qapi.optional(Qapi.str({ description: 'the job id; default: the device name of the source' }));
const device = Qapi.str({ description: 'the source: a root node, by device or node name' });
const replaces = Qapi.optional(
  Qapi.str({ description: 'the node the target replaces on completion (the source, a node below it through filters, or a quorum child only the quorum uses); default: the source' }),
);
const sync = {
  ...MirrorSyncMode,
  description: 'what to copy first: full, top (what the top layer allocates), none (only what the guest writes from now on)',
};

/** The members both commands have after `sync` (blockdev-mirror's order; drive-mirror adds `mode` and `unmap`). */
const speed = Qapi.optional(Qapi.int({ description: 'rate limit in bytes per second, 0 = unlimited', default: 0 }));
const granularity = Qapi.optional(
  Qapi.uint32({ description: 'bytes per dirty-bitmap bit, a power of 2 in [512, 64 MiB]; default: the target cluster size within [4 KiB, 64 KiB], else 64 KiB' }),
);
const bufSize = Qapi.optional(Qapi.int({ description: 'data in flight at most, rounded up to the granularity (0: 16 MiB)', default: 0 }));
const onSourceError = Qapi.optional({ ...BlockdevOnError, description: 'what to do on a read error', default: 'report' });
const onTargetError = Qapi.optional({ ...BlockdevOnError, description: 'what to do on a write error', default: 'report' });
const copyMode = Qapi.optional({
  ...MirrorCopyMode,
  description: 'background: guest writes are copied later; write-blocking: also written to the target before they complete',
  default: 'background',
});
const autoFinalize = Qapi.optional(Qapi.bool({ description: 'finalise (and pivot) without job-finalize', default: true }));
const autoDismiss = Qapi.optional(Qapi.bool({ description: 'disappear once concluded', default: true }));

export const BlockdevMirror = Qapi.struct('BlockdevMirror', {
  'job-id': jobId,
  device,
  target: Qapi.str({ description: 'the target: a node or device name, the size of the source' }),
  replaces,
  sync,
  speed,
  granularity,
  'buf-size': bufSize,
  'on-source-error': onSourceError,
  'on-target-error': onTargetError,
  'filter-node-name': Qapi.optional(Qapi.str({ description: 'name of the mirror_top filter node; default: #blockNNN' })),
  'copy-mode': copyMode,
  'auto-finalize': autoFinalize,
  'auto-dismiss': autoDismiss,
});

export const DriveMirror = Qapi.struct('DriveMirror', {
  'job-id': jobId,
  device,
  target: Qapi.str({ description: 'the target image file' }),
  format: Qapi.optional(Qapi.str({ description: "the target's format; default: the source's" })),
  'node-name': Qapi.optional(Qapi.str({ description: 'node name of the opened target (needed with replaces); default: #blockNNN' })),
  replaces,
  sync,
  mode: Qapi.optional({ ...NewImageMode, description: 'create the target (absolute-paths) or open it (existing)', default: 'absolute-paths' }),
  speed,
  granularity,
  'buf-size': bufSize,
  'on-source-error': onSourceError,
  'on-target-error': onTargetError,
  unmap: Qapi.optional(Qapi.bool({ description: 'zeroes may be written by deallocating the target', default: true })),
  'copy-mode': copyMode,
  'auto-finalize': autoFinalize,
  'auto-dismiss': autoDismiss,
});

export type BlockdevMirrorArgs = Static<typeof BlockdevMirror>;
export type DriveMirrorArgs = Static<typeof DriveMirror>;

/** What both commands hand on once the target node is known (drive-mirror's own members resolved). */
export type MirrorArgs = Omit<BlockdevMirrorArgs, 'target'> & {
  /** drive-mirror's: write zeroes without deallocating when false. */
  unmap?: boolean | undefined;
};
