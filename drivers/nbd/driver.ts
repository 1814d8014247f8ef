/**
 * nbd: QEMU's `nbd` protocol driver (block/nbd.c), an NBD client. The node
 * is the export; each request becomes an NBD command on one connection,
 * many in flight at once. What the server does not advertise is emulated
 * here (FUA as write then FLUSH, write-zeroes as writes of zeroes) or
 * skipped (FLUSH, TRIM), as QEMU does; block status comes from
 * base:allocation (or the x-dirty-bitmap context) and is "all data" when
 * the server has no meta context. With `tls-creds` the connection starts
 * TLS first (NBD_OPT_STARTTLS), every reconnection too; the credentials
 * are looked up in the layer's objects when the node opens.
 */
import { alignDown } from '../../core/block/alignment.js';
import { defineBlockDriver, type DriverLimits, type DriverOpenContext, type NodeDescription } from '../../core/block/driver.js';
import type { BlockStatusExtent, WriteFlags, ZeroFlags } from '../../core/block/request.js';
import { BlockIoError, BlockLayerError } from '../../core/errors.js';
import type { ObjectRegistry } from '../../core/objects/object-registry.js';
import {
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLUSH,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_MAX_PAYLOAD,
  NBD_MAX_STRING,
  NBD_META_BASE_ALLOCATION,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
} from '../../core/protocols/nbd/constants.js';
import { NbdClient } from './nbd-client.js';
import type { HandshakeParams, NbdExportInfo } from './nbd-handshake.js';
import type { NbdSession } from './nbd-session.js';
import { nbdFilename, parseNbdUri } from './nbd-uri.js';
import { type NbdOptions, nbdOptions } from './options.js';

/** Largest buffer of zeroes written when the server cannot WRITE_ZEROES. */
const ZERO_CHUNK = 1 << 20;

export interface NbdState {
  readonly client: NbdClient;
  readonly filename: string;
  readonly size: number;
  readonly alignment: number;
  readonly maxTransfer: number;
  /** x-dirty-bitmap names qemu:allocation-depth, whose values are depths, not flags. */
  readonly allocationDepth: boolean;
}

function has(session: NbdSession, flag: number): boolean {
  return (session.info.flags & flag) !== 0;
}

/**
 * Request geometry, as QEMU's nbd_refresh_limits: the server's minimum
 * block size, else 1 when the size is not sector-aligned or block status
 * may report byte extents, else 512; at most 32 MiB per request.
 */
function geometry(info: NbdExportInfo): { alignment: number; maxTransfer: number } {
  const alignment = info.blockSize?.minimum ?? (info.size % 512 !== 0 || info.contextId !== undefined ? 1 : 512);
  const maximum = Math.min(info.blockSize?.maximum ?? NBD_MAX_PAYLOAD, NBD_MAX_PAYLOAD);
  return { alignment, maxTransfer: alignDown(maximum, alignment) };
}

/** Why a reconnection's export cannot replace the one the node was opened on. */
function incompatibility(first: NbdExportInfo, readOnly: boolean, info: NbdExportInfo): string | undefined {
  if (info.size !== first.size) return `export size changed from ${first.size} to ${info.size}`;
  if (!readOnly && (info.flags & NBD_FLAG_READ_ONLY) !== 0) return 'NBD export became read-only';
  const { alignment, maxTransfer } = geometry(first);
  const min = info.blockSize?.minimum ?? 1;
  if (alignment % min !== 0 || (info.blockSize?.maximum ?? NBD_MAX_PAYLOAD) < maxTransfer) return 'export block sizes changed';
  return undefined;
}

/**
 * The TLS part of the handshake: client credentials from the layer's
 * objects (QEMU's errors when missing or for the server side), and the name
 * an X.509 certificate must carry: tls-hostname, else the inet host.
 */
function tlsParams(options: NbdOptions, objects: ObjectRegistry | undefined): HandshakeParams['tls'] {
  const id = options['tls-creds'];
  if (id === undefined) return undefined;
  if (objects === undefined) throw new BlockLayerError(`No TLS credentials with id '${id}'`);
  const creds = objects.tlsCreds(id, 'client');
  return { creds, hostname: options['tls-hostname'] ?? (options.server.type === 'inet' ? options.server.host : undefined) };
}

/** Connects and negotiates; a read-only export needs a read-only node (or auto-read-only), as in QEMU. */
async function nbdOpen(ctx: DriverOpenContext<NbdOptions>, objects: ObjectRegistry | undefined): Promise<NbdState> {
  const { options } = ctx;
  const tls = tlsParams(options, objects);
  const exportName = options.export ?? '';
  if (Buffer.byteLength(exportName) > NBD_MAX_STRING) throw new BlockLayerError('export name too long to send to server');
  const bitmap = options['x-dirty-bitmap'];
  if (bitmap !== undefined && Buffer.byteLength(bitmap) > NBD_MAX_STRING) {
    throw new BlockLayerError('x-dirty-bitmap query too long to send to server');
  }
  // What reconnections are checked against, known once the first connection is made.
  const opened: { info?: NbdExportInfo; readOnly: boolean } = { readOnly: ctx.readOnly };
  const client = await NbdClient.open({
    server: options.server,
    handshake: { exportName, metaContext: bitmap ?? NBD_META_BASE_ALLOCATION, ...(tls === undefined ? {} : { tls }) },
    reconnectDelay: options['reconnect-delay'] ?? 0,
    openTimeout: options['open-timeout'] ?? 0,
    compatible: (info) => incompatibility(opened.info!, opened.readOnly, info),
  });
  const first = client.info;
  opened.info = first;
  try {
    if (bitmap !== undefined && first.contextId === undefined) throw new BlockLayerError(`requested x-dirty-bitmap ${bitmap} not found`);
    if ((first.flags & NBD_FLAG_READ_ONLY) !== 0 && !ctx.readOnly) {
      if (!ctx.autoReadOnly) throw new BlockLayerError('NBD export is read-only');
      ctx.fallBackToReadOnly();
      opened.readOnly = true;
    }
  } catch (error) {
    await client.close();
    throw error;
  }
  const given = ctx.givenOptions.export;
  return {
    client,
    filename: nbdFilename(options.server, typeof given === 'string' ? given : undefined),
    size: first.size,
    ...geometry(first),
    allocationDepth: bitmap === 'qemu:allocation-depth',
  };
}

/** NBD_CMD_DISC, then the socket is closed. */
async function nbdClose(state: NbdState): Promise<void> {
  await state.client.close();
}

function nbdLimits(state: NbdState): Partial<DriverLimits> {
  return { requestAlignment: state.alignment, maxTransfer: state.maxTransfer };
}

/** The size the server announced. */
function nbdGetLength(state: NbdState): number {
  return state.size;
}

/** NBD_CMD_READ; holes in a structured reply read as zeroes. */
async function nbdRead(state: NbdState, offset: number, buf: Buffer): Promise<void> {
  await state.client.request((session) => session.read(offset, buf));
}

/** FLUSH on `session`, if the server takes it (otherwise there is nothing to flush, as QEMU assumes). */
async function flushSession(session: NbdSession): Promise<void> {
  if (has(session, NBD_FLAG_SEND_FLUSH)) await session.command(NBD_CMD_FLUSH, 0, 0, 0);
}

/** NBD_CMD_WRITE, with FUA, or followed by FLUSH where the server has no FUA. */
async function nbdWrite(state: NbdState, offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
  await state.client.request(async (session) => {
    const fua = flags.fua === true && has(session, NBD_FLAG_SEND_FUA);
    await session.write(offset, buf, fua ? NBD_CMD_FLAG_FUA : 0);
    if (flags.fua === true && !fua) await flushSession(session);
  });
}

/**
 * NBD_CMD_WRITE_ZEROES with NO_HOLE unless unmapping is allowed, FAST_ZERO
 * for noFallback; without server support noFallback fails with ENOTSUP
 * and otherwise zeroes are written as data.
 */
async function nbdWriteZeroes(state: NbdState, offset: number, length: number, flags: ZeroFlags): Promise<void> {
  await state.client.request(async (session) => {
    const canZero = has(session, NBD_FLAG_SEND_WRITE_ZEROES);
    if (flags.noFallback === true && !(canZero && has(session, NBD_FLAG_SEND_FAST_ZERO))) throw new BlockIoError('ENOTSUP');
    const fua = flags.fua === true && has(session, NBD_FLAG_SEND_FUA);
    if (canZero) {
      const nbdFlags =
        (flags.mayUnmap === true ? 0 : NBD_CMD_FLAG_NO_HOLE) |
        (flags.noFallback === true ? NBD_CMD_FLAG_FAST_ZERO : 0) |
        (fua ? NBD_CMD_FLAG_FUA : 0);
      await session.command(NBD_CMD_WRITE_ZEROES, nbdFlags, offset, length);
    } else {
      const zeroes = Buffer.alloc(Math.min(length, ZERO_CHUNK, state.maxTransfer));
      for (let done = 0; done < length; done += zeroes.length) {
        await session.write(offset + done, zeroes.subarray(0, Math.min(zeroes.length, length - done)), fua ? NBD_CMD_FLAG_FUA : 0);
      }
    }
    if (flags.fua === true && !fua) await flushSession(session);
  });
}

/** NBD_CMD_TRIM, if the server takes it (discard is advisory). */
async function nbdDiscard(state: NbdState, offset: number, length: number): Promise<void> {
  await state.client.request(async (session) => {
    if (has(session, NBD_FLAG_SEND_TRIM)) await session.command(NBD_CMD_TRIM, 0, offset, length);
  });
}

async function nbdFlush(state: NbdState): Promise<void> {
  await state.client.request(flushSession);
}

/** NBD cannot resize; the same size is fine (QEMU's nbd_co_truncate). */
async function nbdTruncate(state: NbdState, length: number): Promise<void> {
  if (length !== state.size) throw new BlockIoError('ENOTSUP', 'Cannot resize NBD nodes');
}

/**
 * NBD_CMD_BLOCK_STATUS for the negotiated context: HOLE clear means data,
 * ZERO means reads return zeroes; extents past the request are clipped.
 * Without a context everything is data.
 */
async function nbdBlockStatus(state: NbdState, offset: number, length: number): Promise<BlockStatusExtent[]> {
  return state.client.request(async (session) => {
    if (session.info.contextId === undefined) return [{ offset, length, data: true, zero: false, allocated: true, hostOffset: offset }];
    const end = offset + Math.min(length, alignDown(0xffffffff, state.alignment));
    const extents: BlockStatusExtent[] = [];
    let at = offset;
    for (const extent of await session.blockStatus(offset, end - offset)) {
      if (extent.length === 0 || at >= end) break;
      const bytes = Math.min(extent.length, end - at);
      // QEMU's hack for qemu:allocation-depth: every depth past 2 reads as 2.
      const flags = state.allocationDepth ? Math.min(extent.flags, 2) : extent.flags;
      extents.push({ offset: at, length: bytes, data: (flags & NBD_STATE_HOLE) === 0, zero: (flags & NBD_STATE_ZERO) !== 0, allocated: true, hostOffset: at });
      at += bytes;
    }
    if (extents.length === 0) throw new BlockIoError('EIO', 'NBD server sent a zero-length extent');
    return extents;
  });
}

/** The URI-like filename QEMU shows for the node. */
async function nbdDescribe(state: NbdState): Promise<NodeDescription> {
  return { filename: state.filename };
}

/** The driver; `objects` holds the TLS credentials `tls-creds` names (none: tls-creds cannot be used). */
export function createNbdDriver(objects?: ObjectRegistry) {
  return defineBlockDriver<NbdOptions, NbdState>({
    name: 'nbd',
    kind: 'protocol',
    summary: 'an export of an NBD server (client)',
    options: nbdOptions,
    protocols: ['nbd', 'nbd+tcp', 'nbd+unix'],
    parseFilename: (filename) => ({ ...parseNbdUri(filename) }),
    // Emulated here where the server lacks them, so the node can always pass them on.
    capabilities: { canZero: true, canDiscard: true, canFua: true, concurrency: 'parallel' },
    open: (ctx) => nbdOpen(ctx, objects),
    close: nbdClose,
    limits: nbdLimits,
    getLength: nbdGetLength,
    read: nbdRead,
    write: nbdWrite,
    writeZeroes: nbdWriteZeroes,
    discard: nbdDiscard,
    flush: nbdFlush,
    truncate: nbdTruncate,
    blockStatus: nbdBlockStatus,
    describe: nbdDescribe,
  });
}

/** The driver without a layer's objects (tests that build a graph by hand). */
export const nbdDriver = createNbdDriver();
