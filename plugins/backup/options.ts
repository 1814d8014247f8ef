/**
 * Arguments of blockdev-backup and drive-backup (QEMU 7.2's BackupCommon,
 * BlockdevBackup, DriveBackup), in QEMU's member order: it decides which
 * problem is reported first.
 */
import { BlockdevOnError } from '../../core/job/error-policy.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const MirrorSyncMode = Qapi.enum('MirrorSyncMode', ['top', 'full', 'none', 'incremental', 'bitmap']);
export const BitmapSyncMode = Qapi.enum('BitmapSyncMode', ['on-success', 'never', 'always']);
export const NewImageMode = Qapi.enum('NewImageMode', ['existing', 'absolute-paths']);

export const BackupPerf = Qapi.struct('BackupPerf', {
  'use-copy-range': Qapi.optional(Qapi.bool({ description: 'copy data by copy offloading (copy_file_range between files), falling back to reading and writing where it cannot', default: false })),
  'max-workers': Qapi.optional(Qapi.int({ description: 'copies in flight at once', default: 64 })),
  'max-chunk': Qapi.optional(Qapi.int64({ description: 'largest copy in bytes (0: the engine default, 1 MiB)', default: 0 })),
});

const backupCommon = {
  'job-id': Qapi.optional(Qapi.str({ description: 'the job id; default: the device name of the source' })),
  device: Qapi.str({ description: 'the source: a node or device name' }),
  sync: {
    ...MirrorSyncMode,
    description: 'what to copy: full, top (what the top layer allocates), none (only what the guest overwrites), bitmap (what `bitmap` marks), incremental (bitmap, with bitmap-mode on-success)',
  },
  speed: Qapi.optional(Qapi.int({ description: 'rate limit in bytes per second, 0 = unlimited', default: 0 })),
  bitmap: Qapi.optional(Qapi.str({ description: 'a dirty bitmap of the source: what sync bitmap/incremental copies; full/top bring it up to date' })),
  'bitmap-mode': Qapi.optional({ ...BitmapSyncMode, description: 'what happens to the bitmap at the end' }),
  compress: Qapi.optional(Qapi.bool({ description: 'write compressed data (the target must support it)', default: false })),
  'on-source-error': Qapi.optional({ ...BlockdevOnError, description: 'what to do on a read error', default: 'report' }),
  'on-target-error': Qapi.optional({ ...BlockdevOnError, description: 'what to do on a write error', default: 'report' }),
  'auto-finalize': Qapi.optional(Qapi.bool({ description: 'finalise without job-finalize', default: true })),
  'auto-dismiss': Qapi.optional(Qapi.bool({ description: 'disappear once concluded', default: true })),
  'filter-node-name': Qapi.optional(Qapi.str({ description: 'name of the copy-before-write filter node; default: #blockNNN' })),
  'x-perf': Qapi.optional({ ...BackupPerf, description: 'performance tuning (unstable, as in QEMU)' }),
};

export const BlockdevBackup = Qapi.struct('BlockdevBackup', {
  ...backupCommon,
  target: Qapi.str({ description: 'the target: a node or device name' }),
});

export const DriveBackup = Qapi.struct('DriveBackup', {
  ...backupCommon,
  target: Qapi.str({ description: 'the target image file' }),
  format: Qapi.optional(Qapi.str({ description: "the target's format; default: the source's" })),
  mode: Qapi.optional({ ...NewImageMode, description: 'create the target (absolute-paths) or open it (existing)', default: 'absolute-paths' }),
});

export type BlockdevBackupArgs = Static<typeof BlockdevBackup>;
export type DriveBackupArgs = Static<typeof DriveBackup>;
export type BackupCommonArgs = Omit<BlockdevBackupArgs, 'target'>;
export type BitmapSyncModeValue = Static<typeof BitmapSyncMode>;
