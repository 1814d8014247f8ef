/**
 * block-export-add's checks for an NBD export, in QEMU 7.2's order and
 * words (block/export/export.c, then nbd/server.c): the id, the node, the
 * node's writability, iothreads, the server, the name and description
 * (NBD strings of at most 4096 bytes), the name's uniqueness, the bitmaps
 * (each found, then usable, in list order; marking them busy is the
 * caller's, once every check passed).
 */
import type { BitmapStore } from '../../core/bitmap/bitmap-store.js';
import { CHECK_USABLE, type DirtyBitmap } from '../../core/bitmap/dirty-bitmap.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { BlockLayerError } from '../../core/errors.js';
import { NBD_MAX_STRING } from '../../core/protocols/nbd/constants.js';
import type { ExportSettings } from './nbd-export.js';
import type { BlockExportArgs } from './options.js';

/** QEMU's id_wellformed(). */
const ID_PATTERN = /^[A-Za-z][A-Za-z0-9._-]*$/;

export interface ExportContext {
  node(name: string): BlockNode | undefined;
  idInUse(id: string): boolean;
  nameInUse(name: string): boolean;
  running(): boolean;
  bitmaps: BitmapStore;
}

export function checkExportArguments(args: BlockExportArgs, context: ExportContext): ExportSettings {
  const { id } = args;
  if (!ID_PATTERN.test(id)) throw new BlockLayerError('Invalid block export id');
  if (context.idInUse(id)) throw new BlockLayerError(`Block export id '${id}' is already in use`);
  const node = context.node(args['node-name']);
  if (node === undefined) throw new BlockLayerError(`Cannot find device='' nor node-name='${args['node-name']}'`);
  const writable = args.writable ?? false;
  if (writable && node.readOnly) throw new BlockLayerError('Cannot export read-only node as writable');
  if (args.iothread !== undefined) throw new BlockLayerError(`iothread "${args.iothread}" not found`);
  if (!context.running()) throw new BlockLayerError('NBD server not running');
  const name = args.name ?? args['node-name'];
  checkString(name, 'export name');
  if (args.description !== undefined) checkString(args.description, 'description');
  if (context.nameInUse(name)) throw new BlockLayerError(`NBD server already has export named '${name}'`);
  const bitmaps = (args.bitmaps ?? []).map((ref) => exportBitmap(ref, node, writable, context.bitmaps));
  return {
    id,
    name,
    description: args.description,
    writable,
    writethrough: args.writethrough ?? false,
    allocationDepth: args['allocation-depth'] ?? false,
    bitmaps,
  };
}

/**
 * One of `bitmaps` (nbd_export_create): a name is looked for on the node,
 * then down its filters and backing chain, and an enabled one on a
 * writable node cannot go out on a read-only export (its contents would
 * change under the client); `{node, name}` is looked up as the bitmap
 * commands do. Either way it must not be busy or inconsistent.
 */
function exportBitmap(ref: string | { node: string; name: string }, node: BlockNode, writable: boolean, store: BitmapStore): DirtyBitmap {
  let bitmap: DirtyBitmap;
  if (typeof ref === 'string') {
    const found = store.findBelow(node, ref);
    if (found === undefined) throw new BlockLayerError(`Bitmap '${ref}' is not found`);
    if (!writable && !found.node.readOnly && found.enabled) {
      throw new BlockLayerError(`Enabled bitmap '${ref}' incompatible with readonly export`);
    }
    bitmap = found;
  } else {
    bitmap = store.lookup(ref.node, ref.name);
  }
  bitmap.check(CHECK_USABLE);
  return bitmap;
}

/** An NBD string: at most 4096 bytes of UTF-8 (QEMU measures strlen), no NUL. */
function checkString(value: string, what: string): void {
  if (Buffer.byteLength(value, 'utf8') > NBD_MAX_STRING) throw new BlockLayerError(`${what} '${value}' too long`);
  if (value.includes('\0')) throw new BlockLayerError(`${what} '${value.replaceAll('\0', '\\0')}' contains a NUL byte`);
}
