/**
 * Metadata contexts an export offers, how LIST/SET_META_CONTEXT queries
 * select them, and the extents of a BLOCK_STATUS reply for each:
 *
 * - `base:allocation` (id 0, as qemu): HOLE where the node does not report
 *   data, ZERO where it reads as zeroes;
 * - `qemu:allocation-depth` (id 1, with `allocation-depth=on`): how many
 *   layers down the backing chain the data comes from, 0 if nowhere;
 * - `qemu:dirty-bitmap:NAME` (ids 2, 3 … in the export's `bitmaps` order):
 *   DIRTY where the bitmap marks the range, in runs of its granules
 *   clipped to the request (qemu's bitmap_to_extents).
 */
import type { DirtyBitmap } from '../../core/bitmap/dirty-bitmap.js';
import { chainStatus } from '../../core/image-tools/chain-status.js';
import { NBD_META_BASE_ALLOCATION, NBD_STATE_DIRTY, NBD_STATE_HOLE, NBD_STATE_ZERO } from '../../core/protocols/nbd/constants.js';
import type { NbdExtent } from '../../core/protocols/nbd/transmission.js';
import type { NbdExport } from './nbd-export.js';

export const ALLOCATION_DEPTH = 'qemu:allocation-depth';
export const DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';

export interface MetaContext {
  /** The id SET_META_CONTEXT gives it (qemu's numbering). */
  readonly id: number;
  readonly name: string;
  /** The bitmap of a `qemu:dirty-bitmap:NAME` context. */
  readonly bitmap?: DirtyBitmap;
}

const BASE: MetaContext = { id: 0, name: NBD_META_BASE_ALLOCATION };
const DEPTH: MetaContext = { id: 1, name: ALLOCATION_DEPTH };
const FIRST_BITMAP_ID = 2;
/** Namespaces whose contexts a LIST query of just the prefix lists (qemu's nbd_meta_*_query). */
const LIST_PREFIXES = ['base:', 'qemu:', DIRTY_BITMAP_PREFIX];

/** At most this many extents per context in one reply (qemu: 1 MiB of extents). */
const MAX_EXTENTS = 131072;
/** Without REQ_ONE, a reply describes at most this much (the client asks again for the rest). */
const STATUS_WINDOW = 1 << 30;
/** With REQ_ONE the first extent is looked for in windows growing from this size. */
const FIRST_WINDOW = 1 << 20;

/** The contexts `exp` offers, in qemu's order. */
export function exportContexts(exp: NbdExport): MetaContext[] {
  const contexts = exp.settings.allocationDepth ? [BASE, DEPTH] : [BASE];
  exp.settings.bitmaps.forEach((bitmap, i) => {
    contexts.push({ id: FIRST_BITMAP_ID + i, name: `${DIRTY_BITMAP_PREFIX}${bitmap.name ?? ''}`, bitmap });
  });
  return contexts;
}

/**
 * The contexts `queries` select. LIST with no query lists everything, and
 * in LIST the namespaces `base:`, `qemu:` and `qemu:dirty-bitmap:` select
 * all of theirs; SET takes exact names only. A name selects its first
 * context (a bitmap exported twice is served once). Unknown names select
 * nothing.
 */
export function matchContexts(exp: NbdExport, queries: readonly string[], listing: boolean): MetaContext[] {
  const offered = exportContexts(exp);
  if (listing && queries.length === 0) return offered;
  const matches = (context: MetaContext, index: number, query: string): boolean => {
    if (query === context.name) return offered.findIndex((c) => c.name === query) === index;
    return listing && LIST_PREFIXES.includes(query) && context.name.startsWith(query);
  };
  return offered.filter((context, index) => queries.some((query) => matches(context, index, query)));
}

/**
 * The extents of `context` from `offset` on, covering at most `length`
 * bytes (within the export). With `reqOne`, exactly one extent.
 */
export async function contextExtents(
  exp: NbdExport,
  context: MetaContext,
  offset: number,
  length: number,
  reqOne: boolean,
): Promise<NbdExtent[]> {
  if (context.bitmap !== undefined) return bitmapExtents(context.bitmap, offset, length, reqOne ? 1 : MAX_EXTENTS);
  const status = context.id === DEPTH.id ? depthExtents : allocationExtents;
  if (reqOne) return [await firstExtent(exp, status, offset, length)];
  const extents = await status(exp, offset, Math.min(length, STATUS_WINDOW));
  return extents.length > MAX_EXTENTS ? extents.slice(0, MAX_EXTENTS) : extents;
}

type StatusFn = (exp: NbdExport, offset: number, length: number) => Promise<NbdExtent[]>;

/** One extent, as long as the status stays the same (asked for in growing windows, so a long run costs few calls). */
async function firstExtent(exp: NbdExport, status: StatusFn, offset: number, length: number): Promise<NbdExtent> {
  const end = offset + length;
  let window = FIRST_WINDOW;
  let position = offset;
  let result: NbdExtent | undefined;
  while (position < end) {
    const span = Math.min(window, end - position);
    const first = (await status(exp, position, span))[0];
    if (first === undefined) break;
    if (result === undefined) result = { ...first };
    else if (first.flags === result.flags) result.length += first.length;
    else break;
    position += first.length;
    if (first.length < span) break;
    window = Math.min(window * 2, STATUS_WINDOW);
  }
  return result ?? { length, flags: 0 };
}

async function allocationExtents(exp: NbdExport, offset: number, length: number): Promise<NbdExtent[]> {
  const extents = await exp.edge.blockStatus(offset, length);
  return merge(extents.map((e) => ({ length: e.length, flags: (e.data ? 0 : NBD_STATE_HOLE) | (e.zero ? NBD_STATE_ZERO : 0) })));
}

async function depthExtents(exp: NbdExport, offset: number, length: number): Promise<NbdExtent[]> {
  const extents = await chainStatus(exp.edge.node, offset, length);
  return merge(extents.map((e) => ({ length: e.length, flags: e.present ? e.depth + 1 : 0 })));
}

/**
 * qemu's bitmap_to_extents: clean and dirty runs from `offset` to the
 * request's end, at most `max` extents (the run that does not fit is left
 * out; the client asks again from where the reply ends).
 */
function bitmapExtents(bitmap: DirtyBitmap, offset: number, length: number, max: number): NbdExtent[] {
  const end = offset + length;
  const out: NbdExtent[] = [];
  const add = (bytes: number, flags: number): boolean => {
    if (bytes === 0) return true;
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === flags) {
      last.length += bytes;
      return true;
    }
    if (out.length >= max) return false;
    out.push({ length: bytes, flags });
    return true;
  };
  let start = offset;
  for (const area of bitmap.dirtyAreas(offset, end)) {
    if (!add(area.offset - start, 0) || !add(area.length, NBD_STATE_DIRTY)) return out;
    start = area.offset + area.length;
  }
  add(end - start, 0);
  return out;
}

/** Joins neighbours with the same flags. */
function merge(extents: NbdExtent[]): NbdExtent[] {
  const out: NbdExtent[] = [];
  for (const extent of extents) {
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === extent.flags) last.length += extent.length;
    else out.push({ ...extent });
  }
  return out;
}
