/**
 * Arguments of blockdev-snapshot-sync and blockdev-snapshot (QEMU 7.2's
 * BlockdevSnapshotSync and BlockdevSnapshot), and of the internal snapshot
 * commands, in QEMU's member order: it decides which problem is reported
 * first.
 */
import { Qapi, type Static } from '../../core/schema/qapi.js';

export const NewImageMode = Qapi.enum('NewImageMode', ['existing', 'absolute-paths']);

export const BlockdevSnapshotSync = Qapi.struct('BlockdevSnapshotSync', {
  device: Qapi.optional(Qapi.str({ description: 'the device (backend) whose top image gets the overlay' })),
  'node-name': Qapi.optional(Qapi.str({ description: 'the node that gets the overlay (instead of `device`)' })),
  'snapshot-file': Qapi.str({ description: 'the overlay image file' }),
  'snapshot-node-name': Qapi.optional(
    Qapi.str({ description: "the overlay's node name; required with `node-name`; default: none (#blockNNN)" }),
  ),
  format: Qapi.optional(Qapi.str({ description: "the overlay's format", default: 'qcow2' })),
  mode: Qapi.optional({
    ...NewImageMode,
    description: 'create the overlay, backed by the node (absolute-paths), or open an image made beforehand (existing)',
    default: 'absolute-paths',
  }),
});

export const BlockdevSnapshot = Qapi.struct('BlockdevSnapshot', {
  node: Qapi.str({ description: 'the node (or device) that gets the overlay' }),
  overlay: Qapi.str({ description: 'the overlay: a node added with blockdev-add and `backing: null`, not in use' }),
});

export const BlockdevSnapshotInternal = Qapi.struct('BlockdevSnapshotInternal', {
  device: Qapi.str({ description: 'the root node (or device) whose image takes the snapshot: a format that keeps internal snapshots (qcow2)' }),
  name: Qapi.str({ description: "the snapshot's name, not yet used in the image" }),
});

export const BlockdevSnapshotDeleteInternal = Qapi.struct('BlockdevSnapshotDeleteInternal', {
  device: Qapi.str({ description: 'the root node (or device) whose image holds the snapshot' }),
  id: Qapi.optional(Qapi.str({ description: "the snapshot's id (with `name`: both must match)" })),
  name: Qapi.optional(Qapi.str({ description: "the snapshot's name (one of id and name is required)" })),
});

/** QEMU's SnapshotInfo, what blockdev-snapshot-delete-internal-sync returns. */
export const SnapshotInfoSchema = Qapi.struct('SnapshotInfo', {
  id: Qapi.str(),
  name: Qapi.str(),
  'vm-state-size': Qapi.int(),
  'date-sec': Qapi.int(),
  'date-nsec': Qapi.int(),
  'vm-clock-sec': Qapi.int(),
  'vm-clock-nsec': Qapi.int(),
  icount: Qapi.optional(Qapi.int()),
});

export type BlockdevSnapshotSyncArgs = Static<typeof BlockdevSnapshotSync>;
export type BlockdevSnapshotArgs = Static<typeof BlockdevSnapshot>;
export type BlockdevSnapshotInternalArgs = Static<typeof BlockdevSnapshotInternal>;
export type BlockdevSnapshotDeleteInternalArgs = Static<typeof BlockdevSnapshotDeleteInternal>;
