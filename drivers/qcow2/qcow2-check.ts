/**
 * qemu-img check for qcow2 (QEMU 7.2's qcow2_co_check and
 * qcow2_check_refcounts): refcounts are recounted from the metadata
 * (qcow2-check-walk.ts) and compared with the stored ones, leaks
 * (stored > counted) and corruptions (stored < counted, and whatever the
 * walk found) are reported with qemu-img's messages, OFLAG_COPIED is
 * checked on the active tables, and with `-r` they are repaired
 * (qcow2-repair.ts): `leaks` lowers leaked refcounts, `all` also raises
 * low ones, rebuilds the refcount structure when a referenced cluster has
 * refcount 0, fixes the flags, and clears the dirty and corrupt bits.
 * The same repair runs when a dirty image is opened read-write.
 */
import type { CheckRepair, ImageCheckResult } from '../../core/block/driver.js';
import { BlockIoError, BlockLayerError, type Errno, strerror } from '../../core/errors.js';
import { calculateRefcounts, type CheckCounts, type CheckRun, type Fix, NO_FIX, noCounts, rawEntry, RefTable, x } from './qcow2-check-walk.js';
import { readL1Entry, readL2Entry, readRefcount } from './qcow2-format.js';
import { type Qcow2Image, readFile, signalCorruption } from './qcow2-image.js';
import {
  markClean,
  markConsistent,
  Qcow2RepairError,
  rebuildRefcountStructure,
  setL1Copied,
  setStoredRefcount,
  storedBlock,
  storedRefcount,
  writeL2Table,
  writeRepairs,
} from './qcow2-repair.js';
import { syncMetadata } from './qcow2-sync.js';

/**
 * A check that could not complete: qemu-img's "Check failed: <strerror>",
 * after the lines printed as the check went (`messages`) and its error
 * reports (`reports`, e.g. `ERROR writing refblock: Input/output error`).
 */
export class Qcow2CheckError extends BlockIoError {
  constructor(
    errno: Errno,
    readonly messages: string[],
    readonly reports: string[] = [],
  ) {
    super(errno);
    this.name = 'Qcow2CheckError';
  }
}

/**
 * QEMU reports an unaligned refcount block once per check, as a corruption
 * event: on an image opened to repair it, that marks the image corrupt.
 */
async function reportUnaligned(run: CheckRun, index: number): Promise<void> {
  if (run.signalled) return;
  run.signalled = true;
  const { image } = run;
  const offset = image.reftable.readBigUInt64BE(index * 8) & ~0x1ffn;
  const message = `Refblock offset 0x${offset.toString(16)} unaligned (reftable index: ${index === 0 ? '0' : `0x${x(index)}`})`;
  if (!image.writable) {
    run.messages.push(`qcow2: Image is corrupt: ${message}; further non-fatal corruption events will be suppressed`);
    return;
  }
  const first = image.failure === undefined;
  const error = await signalCorruption(image, message).catch((e: unknown) => e);
  if (first && error instanceof Error) run.messages.push(error.message);
}

/**
 * Compares the stored refcounts with the counted ones (compare_refcounts),
 * repairing what `fix` allows; a referenced cluster with refcount 0 asks
 * for a rebuild. Returns the highest cluster either count uses.
 */
async function compareRefcounts(run: CheckRun, fix: Fix): Promise<number> {
  const { image, table, counts } = run;
  const { refblockEntries, refcountOrder } = image.g;
  let highest = 0;
  for (let start = 0; start < table.size; start += refblockEntries) {
    const end = Math.min(table.size, start + refblockEntries);
    const block = await storedBlock(image, start / refblockEntries);
    if (block === undefined) {
      await reportUnaligned(run, start / refblockEntries);
      for (let i = start; i < end; i++) run.messages.push(`Can't get refcount for cluster ${i}: Input/output error`);
      counts.checkErrors += end - start;
      continue;
    }
    // Without a refcount block every stored count is 0: only the clusters counted need a look.
    const next = block === null ? (i: number) => table.nextCounted(i, end) : (i: number) => i;
    for (let i = next(start); i < end; i = next(i + 1)) {
      const stored = block === null ? 0 : readRefcount(block, i - start, refcountOrder);
      const counted = table.get(i);
      if (stored > 0 || counted > 0) highest = i;
      if (stored === counted) continue;
      let fixed: 'leaksFixed' | 'corruptionsFixed' | undefined;
      if (stored === 0) run.rebuild = true;
      else if (stored > counted && fix.leaks) fixed = 'leaksFixed';
      else if (stored < counted && fix.errors) fixed = 'corruptionsFixed';
      const word = fixed !== undefined ? 'Repairing' : stored < counted ? 'ERROR' : 'Leaked';
      run.messages.push(`${word} cluster ${i} refcount=${stored} reference=${counted}`);
      if (fixed !== undefined) {
        await setStoredRefcount(image, i, counted);
        counts[fixed]++;
      } else if (stored < counted) {
        counts.corruptions++;
      } else {
        counts.leaks++;
      }
    }
  }
  return highest;
}

/**
 * OFLAG_COPIED on the active L1 and L2 entries must say whether the stored
 * refcount is 1 (check_oflag_copied). Repaired with `-r all`, and with
 * `-r leaks` when nothing else is wrong.
 */
async function checkCopied(run: CheckRun, fix: Fix): Promise<void> {
  const { image, counts } = run;
  const cs = image.g.clusterSize;
  const repair = fix.errors || (fix.leaks && counts.checkErrors === 0 && counts.corruptions === 0 && counts.leaks === 0);
  const word = repair ? 'Repairing' : 'ERROR';
  const table = Buffer.alloc(cs);
  for (let i = 0; i < image.l1Size; i++) {
    const l1Entry = readL1Entry(image.l1, i * 8);
    if (l1Entry.offset === 0) continue;
    const l2Refcount = await storedRefcount(image, Math.floor(l1Entry.offset / cs));
    if (l2Refcount !== undefined && (l2Refcount === 1) !== l1Entry.copied) {
      counts.corruptions++;
      run.messages.push(`${word} OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${rawEntry(image.l1, i * 8)} refcount=${l2Refcount}`);
      if (repair) {
        await setL1Copied(image, i, l2Refcount === 1);
        counts.corruptions--;
        counts.corruptionsFixed++;
      }
    }
    // QEMU skips the table's entries only on I/O errors; an unreadable refcount skips just the flag check above.
    await readFile(image.file, l1Entry.offset, table);
    let dirty = 0;
    for (let at = 0; at < cs; at += 8) {
      const entry = readL2Entry(table, at, image.g, 3);
      if (entry.kind !== 'normal' && entry.kind !== 'zero-alloc') continue;
      const refcount = await storedRefcount(image, Math.floor(entry.host / cs));
      if (refcount === undefined || (refcount === 1) === entry.copied) continue;
      counts.corruptions++;
      run.messages.push(`${word} OFLAG_COPIED data cluster: l2_entry=${rawEntry(table, at)} refcount=${refcount}`);
      if (!repair) continue;
      const high = table.readUInt32BE(at);
      table.writeUInt32BE((refcount === 1 ? high | 0x80000000 : high & 0x7fffffff) >>> 0, at);
      dirty++;
    }
    if (dirty > 0) {
      await writeL2Table(image, l1Entry.offset, table);
      counts.corruptions -= dirty;
      counts.corruptionsFixed += dirty;
    }
  }
}

/** Counts, compares, repairs and checks the flags (qcow2_check_refcounts); returns the image end offset. */
async function checkRefcounts(run: CheckRun, fix: Fix): Promise<number> {
  const { image } = run;
  const cs = image.g.clusterSize;
  await calculateRefcounts(run, fix);
  const beforeCompare = { ...run.counts };
  let highest = await compareRefcounts(run, NO_FIX);
  if (run.rebuild && fix.errors) {
    const before = { ...run.counts };
    run.messages.push('Rebuilding refcount structure');
    await rebuildRefcountStructure(run);
    run.counts.corruptions = 0;
    run.counts.leaks = 0;
    run.rebuild = false;
    run.table.clear();
    await calculateRefcounts(run, NO_FIX);
    // The old structure is now leaked; the leak repair's own counts are not reported (as QEMU).
    const saved = run.counts;
    run.counts = noCounts();
    highest = await compareRefcounts(run, { leaks: true, errors: false });
    if (run.rebuild) run.messages.push('ERROR rebuilt refcount structure is still broken');
    const freshLeaks = run.counts.leaks;
    run.counts = saved;
    if (saved.corruptions < before.corruptions) saved.corruptionsFixed += before.corruptions - saved.corruptions;
    if (saved.leaks < before.leaks) saved.leaksFixed += before.leaks - saved.leaks;
    saved.leaks += freshLeaks;
  } else if (fix.leaks) {
    if (run.rebuild) {
      run.messages.push('ERROR need to rebuild refcount structures');
      run.counts.checkErrors++;
      throw new BlockIoError('EIO');
    }
    if (run.counts.leaks > 0 || run.counts.corruptions > 0) {
      run.counts = beforeCompare;
      highest = await compareRefcounts(run, fix);
    }
  }
  await checkCopied(run, fix);
  return (highest + 1) * cs;
}

function errnoOf(error: unknown): Errno {
  return error instanceof BlockIoError ? error.errno : 'EIO';
}

/** One check pass with the metadata lock held (qcow2_co_check_locked). */
async function checkLocked(image: Qcow2Image, repair: CheckRepair): Promise<ImageCheckResult> {
  // As QEMU, where marking an image corrupt takes its driver away (bs->drv = NULL): nothing more runs on it, a check neither.
  if (image.failure !== undefined) throw new BlockIoError('ENOMEDIUM');
  const fix: Fix = { leaks: repair !== 'none', errors: repair === 'all' };
  if (fix.leaks && !image.writable) throw new BlockIoError('EROFS', `qcow2: image '${image.name}' is read-only; cannot repair it`);
  // What this node still caches is written first: the walk reads the tables from the file.
  if (image.writable && image.failure === undefined) await syncMetadata(image);
  const cs = image.g.clusterSize;
  const run: CheckRun = {
    image,
    counts: noCounts(),
    messages: [],
    table: new RefTable(Math.ceil(image.file.length / cs), image.g.refcountOrder),
    rebuild: false,
    signalled: false,
  };
  let imageEndOffset: number;
  try {
    if (run.table.size > 2 ** 31 - 1) throw new BlockIoError('EFBIG');
    imageEndOffset = await checkRefcounts(run, fix);
    // An image marked corrupt meanwhile takes no more writes through its caches (QEMU's never reach the disk either).
    if (fix.leaks && image.failure === undefined) await writeRepairs(image);
    if (fix.leaks && run.counts.checkErrors === 0 && run.counts.corruptions === 0) {
      await markClean(image);
      await markConsistent(image);
    }
  } catch (error) {
    const errno = errnoOf(error);
    if (error instanceof Qcow2RepairError) throw new Qcow2CheckError(errno, run.messages, [error.message]);
    const text = error instanceof Error ? error.message : String(error);
    if (text !== strerror(errno)) run.messages.push(text);
    throw new Qcow2CheckError(errno, run.messages);
  }
  return result(image, run.counts, run.messages, imageEndOffset);
}

function result(image: Qcow2Image, counts: CheckCounts, messages: string[], imageEndOffset: number): ImageCheckResult {
  return {
    checkErrors: counts.checkErrors,
    corruptions: counts.corruptions,
    leaks: counts.leaks,
    corruptionsFixed: counts.corruptionsFixed,
    leaksFixed: counts.leaksFixed,
    imageEndOffset,
    totalClusters: Math.ceil(image.size / image.g.clusterSize),
    allocatedClusters: counts.allocated,
    fragmentedClusters: counts.fragmented,
    compressedClusters: counts.compressed,
    messages,
  };
}

/** The driver's `check`: one pass, repairing what `repair` allows. */
export async function checkQcow2(image: Qcow2Image, repair: CheckRepair): Promise<ImageCheckResult> {
  return image.lock.run(() => checkLocked(image, repair));
}

/**
 * The repair QEMU runs when a dirty image (lazy refcounts not written
 * back) is opened read-write: a full check with `-r all`. The image is
 * refused if anything is left that the repair could not fix.
 */
export async function repairDirtyRefcounts(image: Qcow2Image): Promise<void> {
  let outcome: ImageCheckResult;
  try {
    outcome = await checkLocked(image, 'all');
  } catch (error) {
    throw new BlockLayerError(`Could not repair dirty image: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (outcome.checkErrors > 0 || outcome.corruptions > 0) {
    throw new BlockLayerError(
      `qcow2: Could not repair dirty image '${image.name}': ${outcome.corruptions} corruptions remain; ` +
        `open it read-only, or run 'qemu-img check -r all'`,
    );
  }
}
