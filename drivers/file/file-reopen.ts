/**
 * Reopening a file node in the other mode (QEMU's raw_reopen_prepare /
 * commit / abort in file-posix.c): a new descriptor is opened with the new
 * access mode first, so a refusal (EACCES, EROFS) leaves the node on its
 * old one; the image locks move to it for the new mode (the old
 * descriptor's go first, or the new one would conflict with them), and
 * come back to the old one if another process refuses them there; then
 * the state takes the new descriptor and the old one closes. The node is
 * drained and flushed by the core before this runs.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { DriverReopen } from '../../core/block/driver.js';
import { BlockLayerError, systemErrorText } from '../../core/errors.js';
import type { FileState } from './driver.js';
import { native } from './file-io.js';
import { applyImageLocks, releaseImageLocks, retakeImageLocks } from './image-lock.js';

export async function fileReopen(state: FileState, { readOnly, permissions }: DriverReopen): Promise<void> {
  const flags = (readOnly ? constants.O_RDONLY : constants.O_RDWR) | constants.O_NONBLOCK;
  const handle = await open(state.filename, flags).catch((error: unknown) => {
    // qemu_open's wording, as QEMU's reopen reports it.
    throw new BlockLayerError(`Could not open '${state.filename}': ${systemErrorText(error)}`);
  });
  const old = state.handle;
  if (state.locking) {
    releaseImageLocks(native.ops!, old.fd, state.lockBytes);
    try {
      state.lockBytes = applyImageLocks(native.ops!, handle.fd, new Set(), permissions, state.filename);
    } catch (error) {
      await handle.close().catch(() => undefined);
      retakeImageLocks(native.ops!, old.fd, state.lockBytes);
      throw error;
    }
  }
  state.handle = handle;
  // Nothing is in flight on the old descriptor (drained), and it was flushed; a close error loses nothing.
  await old.close().catch(() => undefined);
}
