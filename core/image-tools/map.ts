/**
 * qemu-img map: where the image's bytes come from, walking the backing
 * chain, as a list of entries merged the way qemu-img 7.2 merges them
 * (same flags and depth, contiguous in the file), printed as its JSON or
 * its human table.
 */
import type { BlockNode } from '../block/block-node.js';
import { nodeFilename } from '../block/node-info.js';
import { chainStatus, STATUS_PROBE } from './chain-status.js';
import { hexAlt } from './qemu-text.js';

/** One entry of `qemu-img map --output=json`. */
export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  /** Host offset in `filename`, when the data lies there as is. */
  offset?: number;
  /** The file holding the data (the human table's last column; not part of the JSON). */
  filename?: string;
}

export interface MapOptions {
  /** --start-offset: where to begin (default 0). */
  startOffset?: number;
  /** --max-length: how much to map at most (default: to the end). */
  maxLength?: number;
}

/** qemu-img's entry_mergeable(). */
function mergeable(current: MapEntry, next: MapEntry): boolean {
  if (current.length === 0) return false;
  if (current.zero !== next.zero || current.data !== next.data || current.depth !== next.depth) return false;
  if (current.present !== next.present || current.filename !== next.filename) return false;
  if ((current.offset === undefined) !== (next.offset === undefined)) return false;
  return current.offset === undefined || current.offset + current.length === next.offset;
}

/** The file a node's data lives in: its `file` child's name (a protocol node names itself). */
async function dataFilename(node: BlockNode, cache: Map<BlockNode, string>): Promise<string> {
  let name = cache.get(node);
  if (name === undefined) {
    name = await nodeFilename(node.children.get('file')?.node ?? node);
    cache.set(node, name);
  }
  return name;
}

/** The merged map of `[startOffset, startOffset + maxLength)` of the image. */
export async function mapImage(node: BlockNode, options: MapOptions = {}): Promise<MapEntry[]> {
  const start = options.startOffset ?? 0;
  const end = Math.min(node.length, options.maxLength === undefined ? Infinity : start + options.maxLength);
  const entries: MapEntry[] = [];
  const filenames = new Map<BlockNode, string>();
  let position = start;
  while (position < end) {
    const extents = await chainStatus(node, position, Math.min(STATUS_PROBE, end - position));
    if (extents.length === 0) break;
    for (const e of extents) {
      const next: MapEntry = { start: e.offset, length: e.length, depth: e.depth, present: e.present, zero: e.zero, data: e.data };
      if (e.hostOffset !== undefined) {
        next.offset = e.hostOffset;
        next.filename = await dataFilename(e.node, filenames);
      }
      const current = entries[entries.length - 1];
      if (current !== undefined && mergeable(current, next)) current.length += next.length;
      else entries.push(next);
      position = e.offset + e.length;
    }
  }
  // qemu-img prints its empty starting entry when there is nothing to map.
  if (entries.length === 0) entries.push({ start, length: 0, depth: 0, present: false, zero: false, data: false });
  return entries;
}

/** `qemu-img map --output=json`: one entry a line, in a JSON array. */
export function formatMapJson(entries: readonly MapEntry[]): string {
  const lines = entries.map(
    (e) =>
      `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, ` +
      `"zero": ${e.zero}, "data": ${e.data}${e.offset === undefined ? '' : `, "offset": ${e.offset}`}}`,
  );
  return `[${lines.join(',\n')}]\n`;
}

export interface HumanMap {
  /** The table, up to the entry that cannot be shown. */
  text: string;
  /** Set when data is not stored as is (compressed clusters): qemu-img's error, exit code 1. */
  error?: string;
}

/** `qemu-img map` (human): the ranges that hold data, where they are in which file. */
export function formatMapHuman(entries: readonly MapEntry[]): HumanMap {
  const column = (n: number): string => hexAlt(n).padEnd(16);
  let text = `${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File\n`;
  for (const e of entries) {
    if (e.data && e.offset === undefined) {
      return { text, error: 'File contains external, encrypted or compressed clusters.' };
    }
    if (e.data && !e.zero) text += `${column(e.start)}${column(e.length)}${column(e.offset ?? 0)}${e.filename ?? ''}\n`;
  }
  return { text };
}
