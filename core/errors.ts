/**
 * Errors that cross the API and QMP boundary. `errorClass` is QEMU's QMP
 * error class, so a handler can throw one and the QMP layer reports it as is;
 * anything else thrown is reported as GenericError with its message.
 */
export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound' | 'KVMMissingCap';

export class BlockLayerError extends Error {
  constructor(
    message: string,
    readonly errorClass: QmpErrorClass = 'GenericError',
    /** A further line for people (QEMU's error_append_hint): the tools print it, QMP leaves it out. */
    readonly hint?: string,
  ) {
    super(message);
    this.name = 'BlockLayerError';
  }
}

/** The errno names the block layer reports; messages are glibc's strerror texts, as QEMU prints them. */
const errnoMessages = {
  EIO: 'Input/output error',
  ENOSPC: 'No space left on device',
  EPERM: 'Operation not permitted',
  EACCES: 'Permission denied',
  EROFS: 'Read-only file system',
  EINVAL: 'Invalid argument',
  ENOENT: 'No such file or directory',
  EISDIR: 'Is a directory',
  ENOTSUP: 'Operation not supported',
  ENOMEDIUM: 'No medium found',
  EFBIG: 'File too large',
  EOVERFLOW: 'Value too large for defined data type',
  ENOMEM: 'Cannot allocate memory',
  ESHUTDOWN: 'Cannot send after transport endpoint shutdown',
  ECANCELED: 'Operation canceled',
  EBUSY: 'Device or resource busy',
} as const;

export type Errno = keyof typeof errnoMessages;

export function strerror(errno: Errno): string {
  return errnoMessages[errno];
}

/**
 * An I/O error from a driver or the node seam. Jobs look at `errno` for their
 * error policy (`enospc` stops only on ENOSPC); the message is what QEMU would
 * print for the same failure.
 */
export class BlockIoError extends BlockLayerError {
  constructor(
    readonly errno: Errno,
    message: string = strerror(errno),
  ) {
    super(message);
    this.name = 'BlockIoError';
  }
}

function isErrno(code: unknown): code is Errno {
  return typeof code === 'string' && code in errnoMessages;
}

/** Turns an error from node:fs (or anything else) into a BlockIoError, keeping its errno when known. */
export function toBlockIoError(error: unknown): BlockIoError {
  if (error instanceof BlockIoError) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (isErrno(code)) return new BlockIoError(code);
  if (code === 'EOPNOTSUPP') return new BlockIoError('ENOTSUP');
  return new BlockIoError('EIO', error instanceof Error ? error.message : String(error));
}

/** glibc's texts for the other errnos opening files and sockets fails with (messages only: requests keep EIO for them). */
const otherErrnoMessages: Readonly<Record<string, string>> = {
  ENXIO: 'No such device or address',
  ENODEV: 'No such device',
  ENOTDIR: 'Not a directory',
  ENAMETOOLONG: 'File name too long',
  ELOOP: 'Too many levels of symbolic links',
  EMFILE: 'Too many open files',
  ENFILE: 'Too many open files in system',
  ETXTBSY: 'Text file busy',
  EEXIST: 'File exists',
  EAGAIN: 'Resource temporarily unavailable',
  EBADF: 'Bad file descriptor',
  EDQUOT: 'Disk quota exceeded',
  ENOSYS: 'Function not implemented',
  EPIPE: 'Broken pipe',
  ECONNREFUSED: 'Connection refused',
  ECONNRESET: 'Connection reset by peer',
};

/** The strerror text for a node:fs error, falling back to its message. */
export function systemErrorText(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (isErrno(code)) return strerror(code);
  const other = code === undefined ? undefined : otherErrnoMessages[code];
  if (other !== undefined) return other;
  return error instanceof Error ? error.message : String(error);
}

/** What a command line prints of a failure: its message, and the hint on a line of its own. */
export function errorText(error: unknown): string {
  if (error instanceof BlockLayerError && error.hint !== undefined) return `${error.message}\n${error.hint}`;
  return error instanceof Error ? error.message : String(error);
}
