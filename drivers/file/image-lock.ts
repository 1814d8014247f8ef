/**
 * Image locks, as QEMU's file-posix takes them (raw_apply_lock_bytes and
 * raw_check_lock_bytes): a read lock on byte 100 + n of the image file for
 * each permission n (core/block/permissions.ts order) the node's users
 * take, and on byte 200 + n for each one they do not share. Then nobody
 * else may hold byte 200 + n of a permission taken, nor byte 100 + n of
 * one not shared. The locks are open file description locks (the native
 * addon's image_lock.c): QEMU's processes and ours see each other's, and
 * two opens of one image in this process conflict as two processes would.
 */
import { BlockLayerError } from '../../core/errors.js';
import { type NodePermissions, PERMISSIONS } from '../../core/block/permissions.js';
import type { FileNativeOps } from './native/native.js';

const TAKEN_BASE = 100;
const UNSHARED_BASE = 200;

type LockOps = Pick<FileNativeOps, 'lockByte' | 'unlockByte' | 'lockByteHeld'>;

/** The bytes `permissions` lock. */
function lockedBytes(permissions: NodePermissions): Set<number> {
  const bytes = new Set<number>();
  PERMISSIONS.forEach((permission, n) => {
    if (permissions.taken.includes(permission)) bytes.add(TAKEN_BASE + n);
    if (!permissions.shared.includes(permission)) bytes.add(UNSHARED_BASE + n);
  });
  return bytes;
}

/** QEMU's refusal, with its hint (which qemu-img prints on a line of its own and QMP leaves out). */
function conflict(what: string, filename: string): BlockLayerError {
  return new BlockLayerError(`Failed to get ${what} lock`, 'GenericError', `Is another process using the image [${filename}]?`);
}

/** QEMU's raw_check_lock_bytes: the first permission another open holds against `permissions`. */
function checkOthers(ops: LockOps, fd: number, permissions: NodePermissions, filename: string): void {
  PERMISSIONS.forEach((permission, n) => {
    if (permissions.taken.includes(permission) && ops.lockByteHeld(fd, UNSHARED_BASE + n)) throw conflict(`"${permission}"`, filename);
  });
  PERMISSIONS.forEach((permission, n) => {
    if (!permissions.shared.includes(permission) && ops.lockByteHeld(fd, TAKEN_BASE + n)) throw conflict(`shared "${permission}"`, filename);
  });
}

/**
 * Moves the locks `held` on `fd` to what `permissions` lock: the new bytes
 * first, then the check, then the bytes no longer needed go. Returns the
 * bytes now held; on a refusal `fd` holds `held` again, as before.
 */
export function applyImageLocks(ops: LockOps, fd: number, held: ReadonlySet<number>, permissions: NodePermissions, filename: string): Set<number> {
  const wanted = lockedBytes(permissions);
  const added: number[] = [];
  try {
    for (const byte of wanted) {
      if (held.has(byte)) continue;
      try {
        ops.lockByte(fd, byte);
      } catch {
        throw new BlockLayerError(`Failed to lock byte ${byte}`);
      }
      added.push(byte);
    }
    checkOthers(ops, fd, permissions, filename);
  } catch (error) {
    for (const byte of added) ops.unlockByte(fd, byte);
    throw error;
  }
  for (const byte of held) if (!wanted.has(byte)) ops.unlockByte(fd, byte);
  return wanted;
}

/** Gives up every lock `held` on `fd` (before the locks move to another descriptor of the image). */
export function releaseImageLocks(ops: LockOps, fd: number, held: ReadonlySet<number>): void {
  for (const byte of held) ops.unlockByte(fd, byte);
}

/** Takes `bytes` on `fd` again after a move to another descriptor failed (a byte another process write-locked meanwhile stays free). */
export function retakeImageLocks(ops: LockOps, fd: number, bytes: ReadonlySet<number>): void {
  for (const byte of bytes) {
    try {
      ops.lockByte(fd, byte);
    } catch {
      // Only a write lock refuses a read lock, and QEMU takes none on these bytes.
    }
  }
}
