/**
 * qemu-img bitmap: changes an image's persistent dirty bitmaps, one
 * operation after another in the order given, through the QMP commands a
 * daemon runs (block-dirty-bitmap-add with `persistent`, -remove, -clear,
 * -enable, -disable, -merge), as qemu-img does; the image stores them as
 * it closes. An operation that fails stops the run; those before it stay.
 */
import type { BlockLayer } from '../block-layer.js';
import { type ImageRef, ImageToolError, withImage } from './image-access.js';
import { errorText } from '../errors.js';

export type BitmapAction = { op: 'add' | 'remove' | 'clear' | 'enable' | 'disable' } | { op: 'merge'; source: string };

export interface BitmapRequest {
  image: ImageRef;
  bitmap: string;
  actions: readonly BitmapAction[];
  /** -g: the granularity of a bitmap --add makes (default: the image's cluster size within [4 KiB, 64 KiB]). */
  granularity?: number;
  /** -b/-F: the image --merge takes its source bitmap from (default: the same image). */
  sourceImage?: ImageRef;
}

/** img_bitmap's checks of its command line, in its order and words. */
export function checkBitmapRequest(
  actions: readonly BitmapAction[],
  granularity: number | undefined,
  sourceFile: string | undefined,
  sourceFormat: string | undefined,
): void {
  if (actions.length === 0) throw new ImageToolError('Need at least one of --add, --remove, --clear, --enable, --disable, or --merge');
  if (granularity !== undefined && !actions.some((a) => a.op === 'add')) throw new ImageToolError('granularity only supported with --add');
  if (sourceFormat !== undefined && sourceFile === undefined) throw new ImageToolError('-F only supported with -b');
  if (sourceFile !== undefined && !actions.some((a) => a.op === 'merge')) {
    throw new ImageToolError('Merge bitmap source file only supported with --merge');
  }
}

export async function changeBitmaps(layer: BlockLayer, request: BitmapRequest): Promise<void> {
  await withImage(layer, request.image, { readOnly: false }, async (node) => {
    const run = async (source?: string): Promise<void> => {
      for (const action of request.actions) {
        const target = { node: node.nodeName, name: request.bitmap };
        const [command, args]: [string, Record<string, unknown>] =
          action.op === 'add'
            ? ['block-dirty-bitmap-add', { ...target, persistent: true, ...(request.granularity === undefined ? {} : { granularity: request.granularity }) }]
            : action.op === 'merge'
              ? ['block-dirty-bitmap-merge', { node: node.nodeName, target: request.bitmap, bitmaps: [source === undefined ? action.source : { node: source, name: action.source }] }]
              : [`block-dirty-bitmap-${action.op}`, target];
        await layer.execute(command, args).catch((error: unknown) => {
          throw new ImageToolError(`Operation ${action.op} on bitmap ${request.bitmap} failed: ${errorText(error)}`);
        });
      }
    };
    if (request.sourceImage === undefined) await run();
    else await withImage(layer, request.sourceImage, { readOnly: true }, (source) => run(source.nodeName));
  });
}
