/**
 * Preallocation of a growing image (QEMU's qcow2_co_truncate and
 * preallocate_co), for create and resize, lock held:
 * - metadata: L2 tables and data clusters for the new range, allocated one
 *   L2 table's worth at a time; the file reaches the last of them, sparse;
 * - falloc, full: a refcount area sized exactly for the new data clusters
 *   and their L2 tables at the end of what the file uses, the data clusters
 *   right after it, reserved or written with zeroes by the file, then the L2
 *   entries (tables allocated as needed). A partly used last cluster of the
 *   old size is copied into the first new one, as QEMU's copy-on-write
 *   does, and its old cluster freed.
 */
import type { PreallocMode } from '../../core/block/driver.js';
import { type L2Entry, writeL2Entry } from './qcow2-format.js';
import { noteFileEnd, type Qcow2Image, signalCorruption, writeFile } from './qcow2-image.js';
import { entryOf, updateEntries, writableL2Table } from './qcow2-l1-l2.js';
import { checkOverlap } from './qcow2-overlap.js';
import { readGuestLocked } from './qcow2-read.js';
import { adjustRefcounts, allocateNonZero, getRefcount, queueFreeEntry, refcountArea } from './qcow2-refcount.js';

/** Grows the allocation of `[from, to)` as `mode` says (`from` the old size, `to` the new; lock held). */
export async function preallocate(image: Qcow2Image, from: number, to: number, mode: Exclude<PreallocMode, 'off'>): Promise<void> {
  if (mode === 'metadata') await preallocateMetadata(image, from, to);
  else await preallocateData(image, from, to, mode);
}

/**
 * L2 tables and clusters for `[from, to)` (QEMU's preallocate_co): a last
 * cluster of the old size that is already ours is kept (a zero one gets its
 * head written and becomes data), any other gets a new cluster with its
 * head copied.
 */
export async function preallocateMetadata(image: Qcow2Image, from: number, to: number): Promise<void> {
  const { clusterSize: cs, l2Entries } = image.g;
  let cluster = Math.floor(from / cs);
  let head: L2Entry | undefined;
  if (from % cs !== 0) {
    const entry = await entryOf(image, cluster);
    if (entry.copied && entry.kind === 'zero-alloc') await keepZeroHead(image, from, entry.host);
    if (entry.copied && (entry.kind === 'normal' || entry.kind === 'zero-alloc')) cluster++;
    else head = entry;
  }
  while (cluster * cs < to) {
    const count = Math.min(Math.ceil(to / cs) - cluster, l2Entries - (cluster % l2Entries));
    await writableL2Table(image, Math.floor(cluster / l2Entries));
    const host = await allocateNonZero(image, count, 'data cluster');
    if (head !== undefined) await copyHead(image, from, host);
    const first = cluster;
    await updateEntries(image, first, count, (c, slice, at) => writeL2Entry(slice, at, host + (c - first) * cs, true, false));
    if (head !== undefined) queueFreeEntry(image, head, 'other');
    head = undefined;
    cluster += count;
  }
}

/** A zero cluster of ours under the old end becomes data: its head written (zeroes), the zero flag cleared. */
async function keepZeroHead(image: Qcow2Image, from: number, host: number): Promise<void> {
  const cs = image.g.clusterSize;
  await copyHead(image, from, host);
  const cluster = Math.floor(from / cs);
  await updateEntries(image, cluster, 1, (_, slice, at) => writeL2Entry(slice, at, host, true, false));
}

/** The last cluster with a reference below `fileLength` (QEMU's qcow2_get_last_cluster). */
async function lastUsedCluster(image: Qcow2Image, fileLength: number): Promise<number> {
  for (let cluster = Math.ceil(fileLength / image.g.clusterSize) - 1; cluster >= 0; cluster--) {
    if ((await getRefcount(image, cluster)) > 0) return cluster;
  }
  return signalCorruption(image, 'There are no references in the refcount table.');
}

/** falloc and full: data clusters for `[from, to)` laid out after a refcount area of their own. */
async function preallocateData(image: Qcow2Image, from: number, to: number, mode: 'falloc' | 'full'): Promise<void> {
  const { clusterSize: cs, l2Entries } = image.g;
  const firstGuest = Math.floor(from / cs);
  const dataClusters = Math.ceil(to / cs) - firstGuest;
  if (dataClusters <= 0) return;
  // One more L2 table than the clusters fill: the range need not start at a table's start.
  const l2Tables = Math.ceil(dataClusters / l2Entries) + 1;
  const used = (await lastUsedCluster(image, image.file.length)) + 1;
  const start = await refcountArea(image, used, dataClusters + l2Tables, true);
  await adjustRefcounts(image, start, dataClusters, 1);
  // What the file holds past the area (room growFile keeps ahead) is unused: the file itself reserves or writes the data.
  await image.file.truncate(start * cs);
  const dataEnd = (start + dataClusters) * cs;
  await image.file.truncate(dataEnd, mode);
  noteFileEnd(image, dataEnd);
  if (from % cs !== 0) await copyHead(image, from, start * cs);
  const old = await entryOf(image, firstGuest);
  for (let cluster = firstGuest, host = start * cs; cluster < firstGuest + dataClusters; ) {
    const count = Math.min(firstGuest + dataClusters - cluster, l2Entries - (cluster % l2Entries));
    const first = cluster;
    const base = host;
    await updateEntries(image, first, count, (c, slice, at) => writeL2Entry(slice, at, base + (c - first) * cs, true, false));
    cluster += count;
    host += count * cs;
  }
  if (from % cs !== 0) queueFreeEntry(image, old, 'other');
}

/** The guest bytes of the old size's last, partly used cluster, copied to `host` (copy-on-write of the cluster's head). */
async function copyHead(image: Qcow2Image, from: number, host: number): Promise<void> {
  const cs = image.g.clusterSize;
  const head = Buffer.alloc(from % cs);
  await readGuestLocked(image, from - head.length, head);
  await checkOverlap(image, host, head.length);
  await writeFile(image, host, head);
}
