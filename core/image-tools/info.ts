/**
 * qemu-img info: QEMU's ImageInfo of an image (and, with --backing-chain,
 * of every image under it), from the node's own description, as
 * qemu-img's JSON or its human text.
 */
import type { BlockNode } from '../block/block-node.js';
import type { SnapshotInfo } from '../block/driver.js';
import { imageInfo, nodeFilename } from '../block/node-info.js';
import { qdictOrdered, qemuJsonPretty, sizeToStr } from './qemu-text.js';

/** QEMU's ImageInfo as qemu-img info prints it, members in QAPI order. */
export interface QemuImageInfo {
  filename: string;
  format: string;
  'dirty-flag'?: boolean;
  'actual-size'?: number;
  'virtual-size': number;
  'cluster-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  snapshots?: SnapshotInfo[];
  'format-specific'?: { type: string; data: Record<string, unknown> };
}

/** ImageInfo of one node (`--backing-chain` lists one per image). */
export async function describeImage(node: BlockNode): Promise<QemuImageInfo> {
  const description = await node.driver.describe?.(node.driverState);
  const core = await imageInfo(node, false);
  // Members are added in QAPI order: qemuJsonPretty relies on it for QEMU's key order.
  const info = { filename: core.filename, format: core.format } as QemuImageInfo;
  // QEMU reports the dirty flag where bdrv_get_info works: qcow2 itself, raw through its file (a host file has it, nbd and null-co have not).
  const overHostFile = node.driver.kind === 'format' && core['actual-size'] !== undefined;
  const dirty = description?.dirtyFlag ?? (overHostFile ? false : undefined);
  if (dirty !== undefined) info['dirty-flag'] = dirty;
  if (core['actual-size'] !== undefined) info['actual-size'] = core['actual-size'];
  info['virtual-size'] = core['virtual-size'];
  if (core['cluster-size'] !== undefined) info['cluster-size'] = core['cluster-size'];
  const backing = node.children.get('backing')?.node;
  if (backing !== undefined) {
    // As the image records them (a relative name stays relative), if the driver tells; else the node's.
    const full = await nodeFilename(backing);
    info['backing-filename'] = description?.backingFilename ?? full;
    info['full-backing-filename'] = full;
    info['backing-filename-format'] = description?.backingFormat ?? backing.driver.name;
  }
  if (description?.snapshots !== undefined) info.snapshots = description.snapshots;
  if (core['format-specific'] !== undefined) info['format-specific'] = core['format-specific'];
  return info;
}

/** The image's info, followed by its backing images' when `backingChain`. */
export async function imageInfoList(node: BlockNode, backingChain: boolean): Promise<QemuImageInfo[]> {
  const list = [await describeImage(node)];
  if (backingChain) {
    const seen = new Set([node]);
    for (let next = node.children.get('backing')?.node; next !== undefined && !seen.has(next); next = next.children.get('backing')?.node) {
      seen.add(next);
      list.push(await describeImage(next));
    }
  }
  return list;
}

/** `--output=json`: one ImageInfo object, or with --backing-chain an array of them. */
export function formatInfoJson(list: readonly QemuImageInfo[], backingChain: boolean): string {
  return qemuJsonPretty(backingChain ? list : list[0]);
}

/** QEMU's dump_qobject() for format-specific data: dashes in keys become spaces, four spaces a level. */
function dumpValue(value: unknown, level: number): string {
  if (Array.isArray(value)) {
    return value
      .map((item, i) => {
        const composite = typeof item === 'object' && item !== null;
        return `${'    '.repeat(level)}[${i}]:${composite ? `\n${dumpValue(item, level + 1)}` : ` ${dumpValue(item, level + 1)}\n`}`;
      })
      .join('');
  }
  if (typeof value === 'object' && value !== null) {
    return Object.entries(value)
      .filter(([, member]) => member !== undefined)
      .map(([key, member]) => {
        const composite = typeof member === 'object' && member !== null;
        const name = key.replaceAll('-', ' ');
        return `${'    '.repeat(level)}${name}:${composite ? `\n${dumpValue(member, level + 1)}` : ` ${dumpValue(member, level + 1)}\n`}`;
      })
      .join('');
  }
  return String(value);
}

const pad2 = (n: number): string => String(n).padStart(2, '0');

/**
 * printf's `%-Ns`: padded to N bytes as stored, not characters (a name in
 * UTF-8 takes more bytes than characters). A byte that was not UTF-8 reads
 * as U+FFFD, three bytes here, and counts as the one it was.
 */
function padBytes(text: string, width: number): string {
  const replaced = text.split('\uFFFD').length - 1;
  return text + ' '.repeat(Math.max(0, width - (Buffer.byteLength(text) - 2 * replaced)));
}

/** One row of QEMU's bdrv_snapshot_dump(): the date in local time, the VM clock as h:m:s.ms. */
function snapshotRow(sn: SnapshotInfo): string {
  const d = new Date(sn['date-sec'] * 1000);
  const date = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  const secs = sn['vm-clock-sec'];
  const clock = `${pad2(Math.floor(secs / 3600))}:${pad2(Math.floor(secs / 60) % 60)}:${pad2(secs % 60)}.${String(Math.floor(sn['vm-clock-nsec'] / 1e6)).padStart(3, '0')}`;
  const icount = sn.icount === undefined ? '' : String(sn.icount);
  return `${padBytes(sn.id, 9)} ${padBytes(sn.name, 16)} ${sizeToStr(sn['vm-state-size']).padStart(8)}${date.padStart(20)}${clock.padStart(13)}${icount.padStart(11)}\n`;
}

/** qemu-img info's snapshot list (bdrv_snapshot_dump's header, then a row per snapshot); qemu-img snapshot -l prints it too. */
export function snapshotList(snapshots: readonly SnapshotInfo[]): string {
  const header = `${'ID'.padEnd(10)}${'TAG'.padEnd(17)}${'VM SIZE'.padStart(8)}${'DATE'.padStart(20)}${'VM CLOCK'.padStart(13)}${'ICOUNT'.padStart(11)}\n`;
  return `Snapshot list:\n${header}${snapshots.map(snapshotRow).join('')}`;
}

/** QEMU's bdrv_image_info_dump() of one image. */
function formatOne(info: QemuImageInfo): string {
  const actual = info['actual-size'] === undefined ? 'unavailable' : sizeToStr(info['actual-size']);
  let text =
    `image: ${info.filename}\n` +
    `file format: ${info.format}\n` +
    `virtual size: ${sizeToStr(info['virtual-size'])} (${info['virtual-size']} bytes)\n` +
    `disk size: ${actual}\n`;
  if (info['cluster-size'] !== undefined) text += `cluster_size: ${info['cluster-size']}\n`;
  if (info['dirty-flag'] === true) text += 'cleanly shut down: no\n';
  const backing = info['backing-filename'];
  if (backing !== undefined) {
    const full = info['full-backing-filename'];
    const note = full === undefined ? ' (cannot determine actual path)' : full !== backing ? ` (actual path: ${full})` : '';
    text += `backing file: ${backing}${note}\n`;
    if (info['backing-filename-format'] !== undefined) text += `backing file format: ${info['backing-filename-format']}\n`;
  }
  if (info.snapshots !== undefined) text += snapshotList(info.snapshots);
  const specific = info['format-specific'];
  if (specific !== undefined) {
    text += 'Format specific information:\n';
    text += dumpValue(qdictOrdered(specific.data), 1);
  }
  return text;
}

/** Human text: each image's block, a blank line between images. */
export function formatInfoHuman(list: readonly QemuImageInfo[]): string {
  return list.map(formatOne).join('\n');
}
