/**
 * NBD protocol constants (NetworkBlockDevice/nbd doc/proto.md), shared by
 * our client and server. Every integer on the wire is big-endian; magics
 * that do not fit a safe JavaScript number are bigints.
 */

export const NBD_MAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const NBD_OLDSTYLE_MAGIC = 0x00420281861253n;
export const NBD_OPTS_MAGIC = 0x49484156454f5054n; // "IHAVEOPT"
export const NBD_REP_MAGIC = 0x0003e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
/** Extended headers (an extension no installed peer speaks): recognised, never negotiated. */
export const NBD_EXTENDED_REQUEST_MAGIC = 0x21e41c71;
export const NBD_EXTENDED_REPLY_MAGIC = 0x6e8a278c;

export const NBD_DEFAULT_PORT = 10809;

/** Handshake flags (server, u16). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flags (u32). */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

/** Transmission flags (u16, in NBD_INFO_EXPORT and the EXPORT_NAME reply). */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;
export const NBD_FLAG_BLOCK_STATUS_PAYLOAD = 1 << 12;

/** Options (u32). */
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

/** Option reply types (u32); bit 31 marks an error. */
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = 0x80000001;
export const NBD_REP_ERR_POLICY = 0x80000002;
export const NBD_REP_ERR_INVALID = 0x80000003;
export const NBD_REP_ERR_PLATFORM = 0x80000004;
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const NBD_REP_ERR_TOO_BIG = 0x80000009;
export const NBD_REP_ERR_EXT_HEADER_REQD = 0x8000000a;

/** NBD_INFO_* (u16), requested in INFO/GO and answered in NBD_REP_INFO. */
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

/** Commands (u16). */
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_RESIZE = 8;

/** Command flags (u16). */
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
export const NBD_CMD_FLAG_PAYLOAD_LEN = 1 << 5;

/** Structured reply chunk flags and types (u16); bit 15 of a type marks an error chunk. */
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_BLOCK_STATUS_EXT = 6;
export const NBD_REPLY_TYPE_ERROR_BIT = 1 << 15;
export const NBD_REPLY_TYPE_ERROR = NBD_REPLY_TYPE_ERROR_BIT | 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = NBD_REPLY_TYPE_ERROR_BIT | 2;

/** Error values (u32) of simple replies and error chunks. */
export const NBD_SUCCESS = 0;
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** base:allocation extent flags. */
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
/** qemu:dirty-bitmap:NAME extent flag. */
export const NBD_STATE_DIRTY = 1 << 0;

export const NBD_META_BASE_ALLOCATION = 'base:allocation';

/** Header sizes in bytes. */
export const NBD_GREETING_SIZE = 18;
export const NBD_OLDSTYLE_GREETING_SIZE = 152;
export const NBD_OPTION_HEADER_SIZE = 16;
export const NBD_OPTION_REPLY_HEADER_SIZE = 20;
export const NBD_REQUEST_SIZE = 28;
export const NBD_SIMPLE_REPLY_SIZE = 16;
export const NBD_STRUCTURED_REPLY_SIZE = 20;
/** The EXPORT_NAME reply: size, flags, then 124 zero bytes unless NO_ZEROES was agreed. */
export const NBD_EXPORT_NAME_REPLY_SIZE = 10;
export const NBD_ZERO_PAD_SIZE = 124;

/**
 * Limits that keep a hostile peer from making us allocate much: 32 MiB of
 * data per READ/WRITE (qemu's NBD_MAX_BUFFER_SIZE), 4096 bytes per string
 * (the spec's MUST), and option payloads sized from the strings they carry.
 */
export const NBD_MAX_PAYLOAD = 32 * 1024 * 1024;
export const NBD_MAX_STRING = 4096;
/** Largest option reply payload we read: a REP_SERVER holds a name and a description, each a string. */
export const NBD_MAX_OPTION_REPLY = 4 + 2 * NBD_MAX_STRING;
/** Largest option request we read (a server's side): a name plus up to 16 meta context queries. */
export const NBD_MAX_OPTION_DATA = 4 + NBD_MAX_STRING + 4 + 16 * (4 + NBD_MAX_STRING);
/** Largest structured chunk payload read whole (error chunks: u32 + u16 + message + u64). */
export const NBD_MAX_ERROR_CHUNK = 4 + 2 + 0xffff + 8;
