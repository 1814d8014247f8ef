/**
 * Copy offloading between two files (QEMU's raw_co_copy_range_from/_to in
 * file-posix.c): the source side turns to the destination, and the
 * destination, when the source is a file too, has the kernel copy with
 * copy_file_range, so the bytes never come up to this process (a file
 * system that can share extents shares them). Without the native addon, or
 * from a node of another driver, the copy is not offloaded (ENOTSUP).
 */
import type { CopyRange } from '../../core/block/copy-range.js';
import { BlockIoError } from '../../core/errors.js';
import type { FileState } from './driver.js';
import { codeOf, ops } from './file-io.js';

/** The bytes are in this file: the destination takes the copy from here. */
export function fileCopyRangeFrom(_state: FileState, range: CopyRange): Promise<void> {
  return range.to.node.copyRangeTo(range);
}

/** copy_file_range from the source's file into this one until all is copied. */
export async function fileCopyRangeTo(state: FileState, range: CopyRange): Promise<void> {
  const source = range.from.node;
  // The same callback marks the same driver, as file-posix compares its own.
  if (ops === undefined || source.driver.copyRangeTo !== fileCopyRangeTo) {
    throw new BlockIoError('ENOTSUP', `Cannot offload a copy from node '${source.nodeName}' to file '${state.filename}'`);
  }
  const from = source.driverState as FileState;
  for (let done = 0; done < range.length; ) {
    let copied: number;
    try {
      copied = await ops.copyFileRange(from.handle.fd, range.from.offset + done, state.handle.fd, range.to.offset + done, range.length - done);
    } catch (error) {
      // Kernels or file systems without it (or across file systems before Linux 5.3) say so in these ways.
      if (['ENOSYS', 'EXDEV', 'EOPNOTSUPP', 'ENOTSUP'].includes(codeOf(error) ?? '')) {
        throw new BlockIoError('ENOTSUP', `copy_file_range from '${from.filename}' to '${state.filename}' is not supported here`);
      }
      throw error;
    }
    // No progress (the source ended under us): let the caller copy through a buffer, as QEMU does (ENOSPC there).
    if (copied === 0) throw new BlockIoError('ENOTSUP', `copy_file_range from '${from.filename}' made no progress at byte ${range.from.offset + done}`);
    done += copied;
  }
}
