/**
 * qemu-img resize: sets an image's virtual size, absolute or relative to
 * the current one (`+1G`, `-512M`). Shrinking deletes what lies past the
 * new end, so it must be asked for (`shrink`); the format decides what a
 * new size may be (qcow2: a multiple of 512, no internal snapshots) and
 * reads as zeroes what a grow adds.
 */
import { isPreallocMode } from '../block/driver.js';
import type { BlockLayer } from '../block-layer.js';
import { qemuOptsSizeError } from '../schema/keyval-typing.js';
import { type ImageRef, ImageToolError, parseSize, withImage } from './image-access.js';
import { errorText } from '../errors.js';

export interface ResizeRequest {
  image: ImageRef;
  /** The size as given: a size, or one to add (`+`) or take away (`-`). */
  size: string;
  /** --shrink: a smaller size is what the user wants. */
  shrink?: boolean;
  /** --preallocation: how the growth is allocated (QEMU's PreallocMode names); default off. */
  preallocation?: string;
}


/** The size argument, as qemu-img's QemuOpts size reads it, with its sign. */
function parseResize(text: string): { relative: -1 | 0 | 1; bytes: number } {
  const relative = text.startsWith('+') ? 1 : text.startsWith('-') ? -1 : 0;
  const bytes = parseSize(relative === 0 ? text : text.slice(1));
  if (bytes === undefined) {
    throw new ImageToolError(qemuOptsSizeError('size'));
  }
  return { relative, bytes };
}

/** Resizes the image; resolves with the new size. */
export async function resizeImage(layer: BlockLayer, request: ResizeRequest): Promise<number> {
  const { relative, bytes } = parseResize(request.size);
  const preallocation = request.preallocation ?? 'off';
  if (!isPreallocMode(preallocation)) throw new ImageToolError(`Invalid preallocation mode '${preallocation}'`);
  return withImage(layer, request.image, { readOnly: false }, async (node) => {
    const current = node.length;
    const total = relative === 0 ? bytes : current + relative * bytes;
    if (total <= 0) throw new ImageToolError('New image size must be positive');
    if (preallocation !== 'off' && total <= current) throw new ImageToolError('Preallocation can only be used for growing images');
    if (total < current && request.shrink !== true) {
      throw new ImageToolError(
        'Use the --shrink option to perform a shrink operation.\n' +
          "warning: Shrinking an image will delete all data beyond the shrunken image's end. " +
          'Before performing such an operation, make sure there is no important data there.',
        1,
        true,
      );
    }
    try {
      await node.truncate(total, { preallocation });
    } catch (error) {
      throw new ImageToolError(errorText(error));
    }
    return total;
  });
}
