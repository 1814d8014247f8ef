/**
 * convert -l: the source read as one of its internal snapshots
 * (bdrv_snapshot_load_tmp), named as qemu-img 7.2 names it, by
 * `snapshot.id=ID,snapshot.name=NAME` (QemuOpts: either or both must
 * match) or by a bare id or name (an id first); with qemu-img's messages.
 */
import type { BlockNode } from '../block/block-node.js';
import { BlockIoError, errorText } from '../errors.js';
import { ImageToolError } from './image-access.js';

/** An internal snapshot by id and/or name, or by either (an id first, as bdrv_snapshot_load_tmp_by_id_or_name). */
export type SnapshotRef = { id?: string; name?: string } | { idOrName: string };

/**
 * convert -l as qemu-img reads it: `snapshot.id=ID,snapshot.name=NAME`
 * (either or both), or a bare id or name.
 */
export function convertSnapshotParam(text: string): SnapshotRef {
  if (!text.startsWith('snapshot.')) return { idOrName: text };
  const ref: { id?: string; name?: string } = {};
  // QemuOpts: flat `key=value` pairs split at single commas (`,,` is a comma in a value).
  for (const pair of splitOptions(text)) {
    const eq = pair.indexOf('=');
    const key = eq < 0 ? pair : pair.slice(0, eq);
    const value = eq < 0 ? 'on' : pair.slice(eq + 1);
    if (key === 'snapshot.id') ref.id = value;
    else if (key === 'snapshot.name') ref.name = value;
    else throw new ImageToolError(`Invalid parameter '${key}'\nFailed in parsing snapshot param '${text}'`, 1, true);
  }
  return ref;
}

/** `a=1,b=x,,y` → ['a=1', 'b=x,y']. */
function splitOptions(text: string): string[] {
  const parts: string[] = [];
  let current = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== ',') current += text[i];
    else if (text[i + 1] === ',') current += text[i++];
    else {
      parts.push(current);
      current = '';
    }
  }
  return [...parts, current];
}

/** Makes the opened source read the snapshot (qemu-img's bdrv_snapshot_load_tmp and its messages). */
export async function loadSnapshot(source: BlockNode, ref: SnapshotRef): Promise<void> {
  const load = async (id: string | undefined, name: string | undefined): Promise<void> => {
    if (id === undefined && name === undefined) throw new BlockIoError('EINVAL', 'snapshot_id and name are both NULL');
    if (source.driver.snapshotLoadTmp === undefined) {
      throw new BlockIoError('ENOTSUP', `Block format '${source.driver.name}' used by device '' does not support temporarily loading internal snapshots`);
    }
    await source.snapshotLoadTmp(id, name);
  };
  try {
    if (!('idOrName' in ref)) await load(ref.id, ref.name);
    else await load(ref.idOrName, undefined).catch((error: unknown) => (error instanceof BlockIoError && error.errno === 'ENOENT' ? load(undefined, ref.idOrName) : Promise.reject(error)));
  } catch (error) {
    throw new ImageToolError(`Failed to load snapshot: ${errorText(error)}`);
  }
}
