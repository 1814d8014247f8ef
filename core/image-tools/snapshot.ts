/**
 * qemu-img snapshot: lists (-l), creates (-c), applies (-a) and deletes
 * (-d) an image's internal snapshots, through the driver's snapshot
 * operations (qcow2 keeps them; other formats answer ENOTSUP), with
 * qemu-img's messages. A new snapshot records the time and nothing of a VM
 * (no VM state, VM clock 0, icount 0), as qemu-img's do; names need not be
 * unique, ids are given in order. -a takes an id or a name, and is
 * refused while the image has bitmaps (they would not describe it any
 * more); -d takes a name.
 */
import { constants } from 'node:os';
import type { BlockLayer } from '../block-layer.js';
import type { BlockNode } from '../block/block-node.js';
import type { BitmapStore } from '../bitmap/bitmap-store.js';
import { BlockIoError, errorText, strerror } from '../errors.js';
import { type ImageRef, ImageToolError, withImage } from './image-access.js';
import { snapshotList } from './info.js';
import { realTimeNs } from '../util/real-time.js';
import { TOKENS } from '../tokens.js';

export type SnapshotAction = { op: 'list' } | { op: 'create' | 'apply' | 'delete'; name: string } | { op: 'none' };

export interface SnapshotRequest {
  image: ImageRef;
  action: SnapshotAction;
}

/** `-95 (Operation not supported)`: the negative errno and its text, as qemu-img prints a driver's return code. */
function errnoText(error: unknown): string {
  const errno = error instanceof BlockIoError ? error.errno : 'EIO';
  return `-${constants.errno[errno as keyof typeof constants.errno] ?? constants.errno.EIO} (${strerror(errno)})`;
}

async function listSnapshots(node: BlockNode): Promise<string> {
  const snapshots = (await node.driver.describe?.(node.driverState))?.snapshots ?? [];
  return snapshots.length === 0 ? '' : snapshotList(snapshots);
}

/** Runs the action; resolves with what qemu-img prints on stdout. */
export async function snapshotImage(layer: BlockLayer, request: SnapshotRequest): Promise<string> {
  const { action } = request;
  const readOnly = action.op === 'list';
  return withImage(layer, request.image, { readOnly }, async (node) => {
    switch (action.op) {
      case 'list':
        return listSnapshots(node);
      case 'create': {
        const now = realTimeNs();
        await node.snapshotCreate({ name: action.name, dateSec: Number(now / 1_000_000_000n), dateNsec: Number(now % 1_000_000_000n) }).catch((error: unknown) => {
          throw new ImageToolError(`Could not create snapshot '${action.name}': ${errnoText(error)}`);
        });
        return '';
      }
      case 'apply':
        // As bdrv_snapshot_goto: the bitmaps would no longer describe the image.
        if (layer.container.get<BitmapStore>(TOKENS.BitmapStore).list(node).some((bitmap) => bitmap.name !== undefined)) {
          throw new ImageToolError(`Could not apply snapshot '${action.name}': Device has active dirty bitmaps`);
        }
        await node.snapshotGoto(action.name).catch((error: unknown) => {
          // As bdrv_snapshot_goto: the driver's errno only, or no support at all.
          const errno = error instanceof BlockIoError ? error.errno : 'EIO';
          const reason = node.driver.snapshotGoto === undefined ? 'Block driver does not support snapshots' : `Failed to load snapshot: ${strerror(errno)}`;
          throw new ImageToolError(`Could not apply snapshot '${action.name}': ${reason}`);
        });
        return '';
      case 'delete': {
        const snapshots = (await node.driver.describe?.(node.driverState))?.snapshots ?? [];
        const found = snapshots.find((sn) => sn.name === action.name);
        if (found === undefined) throw new ImageToolError(`Could not delete snapshot '${action.name}': snapshot not found`);
        await node.snapshotDelete(found.id, found.name).catch((error: unknown) => {
          throw new ImageToolError(`Could not delete snapshot '${action.name}': ${errorText(error)}`);
        });
        return '';
      }
      case 'none':
        return '';
    }
  });
}
