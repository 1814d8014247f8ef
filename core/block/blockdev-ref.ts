/**
 * How driver options name a child node: either a node (or device) name, or
 * the options of a new node opened with the parent (QEMU's BlockdevRef).
 */
import { Qapi } from '../schema/qapi.js';

/** The options of any node, as blockdev-add takes them; driver options are open-ended. */
export interface BlockdevOptionsValue {
  driver: string;
  'node-name'?: string;
  [member: string]: unknown;
}

export const BLOCKDEV_OPTIONS = 'BlockdevOptions';

export const BlockdevRef = Qapi.alternate('BlockdevRef', [
  Qapi.ref<BlockdevOptionsValue>(BLOCKDEV_OPTIONS),
  Qapi.str({ description: 'the name of an existing node or device' }),
]);

/** A child that may also be explicitly absent (`null`), like qcow2's `backing`. */
export const BlockdevRefOrNull = Qapi.alternate('BlockdevRefOrNull', [
  Qapi.ref<BlockdevOptionsValue>(BLOCKDEV_OPTIONS),
  Qapi.str({ description: 'the name of an existing node or device' }),
  Qapi.null(),
]);
