/**
 * NBD error values ↔ the block layer's errno names. The client side is
 * qemu's nbd_errno_to_system_errno (unknown values are EINVAL, as the spec
 * asks); the server side is nbdkit's mapping (EROFS → EPERM, EFBIG → ENOSPC,
 * ENOTSUP only for a fast zero, everything else EINVAL).
 */
import type { Errno } from '../../errors.js';
import {
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
} from './constants.js';

const fromNbd = new Map<number, Errno>([
  [NBD_EPERM, 'EPERM'],
  [NBD_EIO, 'EIO'],
  [NBD_ENOMEM, 'ENOMEM'],
  [NBD_EINVAL, 'EINVAL'],
  [NBD_ENOSPC, 'ENOSPC'],
  [NBD_EOVERFLOW, 'EOVERFLOW'],
  [NBD_ENOTSUP, 'ENOTSUP'],
  [NBD_ESHUTDOWN, 'ESHUTDOWN'],
]);

/** The errno a non-zero NBD error value stands for. */
export function errnoFromNbd(error: number): Errno {
  return fromNbd.get(error) ?? 'EINVAL';
}

const toNbd: Partial<Record<Errno, number>> = {
  EPERM: NBD_EPERM,
  EACCES: NBD_EPERM,
  EROFS: NBD_EPERM,
  EIO: NBD_EIO,
  ENOMEDIUM: NBD_EIO,
  ENOMEM: NBD_ENOMEM,
  ENOSPC: NBD_ENOSPC,
  EFBIG: NBD_ENOSPC,
  EOVERFLOW: NBD_EOVERFLOW,
  ESHUTDOWN: NBD_ESHUTDOWN,
};

/**
 * The NBD error value to send for `errno`. ENOTSUP is only allowed as the
 * answer to a FAST_ZERO request (`fastZero`); otherwise it becomes EINVAL.
 */
export function nbdFromErrno(errno: Errno, fastZero = false): number {
  if (errno === 'ENOTSUP') return fastZero ? NBD_ENOTSUP : NBD_EINVAL;
  return toNbd[errno] ?? NBD_EINVAL;
}
