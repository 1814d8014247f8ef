/**
 * The client side of the NBD handshake, in qemu's order: fixed newstyle,
 * STARTTLS and the TLS handshake when there are TLS credentials (then the
 * rest goes over TLS), STRUCTURED_REPLY, SET_META_CONTEXT right before GO
 * (nbdkit forgets the context otherwise), GO asking for
 * NBD_INFO_BLOCK_SIZE; NBD_OPT_EXPORT_NAME
 * when the server has no GO (or speaks plain newstyle), and the oldstyle
 * greeting of very old servers.
 */
import {
  NBD_CMD_DISC,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_MAX_OPTION_REPLY,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_BLOCK_SIZE_REQD,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_PLATFORM,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_ZERO_PAD_SIZE,
} from '../../core/protocols/nbd/constants.js';
import { StreamEndedError } from '../../core/protocols/nbd/frame-reader.js';
import {
  type BlockSizeInfo,
  blockSizeProblem,
  decodeErrorMessage,
  decodeExportNameReply,
  decodeGreetingMagic,
  decodeInfoReply,
  decodeMetaContextReply,
  decodeOldstyleTail,
  decodeOptionReplyHeader,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  type ExportSummary,
  isErrorReply,
} from '../../core/protocols/nbd/handshake.js';
import { encodeRequest } from '../../core/protocols/nbd/transmission.js';
import { NbdProtocolError } from '../../core/protocols/nbd/wire.js';
import { BlockLayerError } from '../../core/errors.js';
import type { TlsCreds } from '../../core/objects/user-object.js';
import type { NbdChannel } from './nbd-channel.js';

/** What a handshake established. */
export interface NbdExportInfo extends ExportSummary {
  style: 'fixed-newstyle' | 'newstyle' | 'oldstyle';
  /** Structured replies were agreed (needed for block status and sparse reads). */
  structured: boolean;
  /** The id of the meta context asked for, if the server selected it. */
  contextId: number | undefined;
  /** NBD_INFO_BLOCK_SIZE, if the server sent it (GO only). */
  blockSize: BlockSizeInfo | undefined;
}

export interface HandshakeParams {
  exportName: string;
  /** The meta context to select (base:allocation, or x-dirty-bitmap's); none without structured replies. */
  metaContext: string;
  /** TLS is required: STARTTLS first, with these client credentials; `hostname` is what the certificate must name. */
  tls?: { creds: TlsCreds; hostname: string | undefined };
}

const OPTION_NAMES: Record<number, string> = {
  [NBD_OPT_EXPORT_NAME]: 'export name',
  [NBD_OPT_STARTTLS]: 'starttls',
  [NBD_OPT_GO]: 'go',
  [NBD_OPT_STRUCTURED_REPLY]: 'structured reply',
  [NBD_OPT_SET_META_CONTEXT]: 'set meta context',
};

/** qemu's texts for option errors (nbd/client.c nbd_handle_reply_err). */
function optionErrorText(option: number, type: number): string {
  const opt = `option ${option} (${OPTION_NAMES[option] ?? '<unknown>'})`;
  switch (type) {
    case NBD_REP_ERR_UNSUP:
      return `Unsupported ${opt}`;
    case NBD_REP_ERR_POLICY:
      return `Denied by server for ${opt}`;
    case NBD_REP_ERR_INVALID:
      return `Invalid parameters for ${opt}`;
    case NBD_REP_ERR_PLATFORM:
      return `Server lacks support for ${opt}`;
    case NBD_REP_ERR_TLS_REQD:
      return `TLS negotiation required before ${opt}`;
    case NBD_REP_ERR_UNKNOWN:
      return 'Requested export not available';
    case NBD_REP_ERR_SHUTDOWN:
      return `Server shutting down before ${opt}`;
    case NBD_REP_ERR_BLOCK_SIZE_REQD:
      return `Server requires INFO_BLOCK_SIZE for ${opt}`;
    case NBD_REP_ERR_TOO_BIG:
      return `${opt} payload is too long`;
    default:
      return `Unknown error code when asking for ${opt}`;
  }
}

interface OptionReply {
  type: number;
  payload: Buffer;
}

class Negotiation {
  /** GO or EXPORT_NAME succeeded: the server is in the transmission phase. */
  transmitting = false;

  constructor(private readonly channel: NbdChannel) {}

  option(option: number, data?: Buffer): void {
    this.channel.send(encodeOption(option, data));
  }

  /**
   * The next reply to `option`; an error reply other than ERR_UNSUP throws
   * with the server's text, unless `strict` is false (qemu's non-strict
   * options hand every error reply back).
   */
  async reply(option: number, strict = true): Promise<OptionReply> {
    const header = decodeOptionReplyHeader(await this.channel.reader.read(20));
    if (header.option !== option) throw new NbdProtocolError(`Unexpected option type ${header.option}, expected ${option}`);
    if (header.length > NBD_MAX_OPTION_REPLY) {
      if (!isErrorReply(header.type)) throw new NbdProtocolError(`option reply of ${header.length} bytes is too long`);
      await this.channel.reader.skip(header.length);
      return this.checked(option, header.type, Buffer.alloc(0), strict);
    }
    return this.checked(option, header.type, await this.channel.reader.read(header.length), strict);
  }

  private checked(option: number, type: number, payload: Buffer, strict: boolean): OptionReply {
    if (!isErrorReply(type) || !strict || (type === NBD_REP_ERR_UNSUP && option !== NBD_OPT_STARTTLS)) return { type, payload };
    const message = decodeErrorMessage(payload);
    const text = optionErrorText(option, type);
    throw new BlockLayerError(message === '' ? text : `${text}; server reported: ${message}`);
  }

  /**
   * An option whose only success reply is ACK; false on any error reply, as
   * qemu takes STRUCTURED_REPLY (a server that requires TLS refuses it with
   * ERR_TLS_REQD, and the error the user sees is then GO's).
   */
  async simple(option: number): Promise<boolean> {
    this.option(option);
    const { type, payload } = await this.reply(option, false);
    if (isErrorReply(type)) return false;
    if (type !== NBD_REP_ACK || payload.length !== 0) throw new NbdProtocolError(`unexpected reply ${type} to option ${option}`);
    return true;
  }

  /**
   * STARTTLS (an error reply, ERR_UNSUP included, fails with qemu's text),
   * then the TLS handshake; the negotiation goes on over TLS, from scratch.
   */
  async startTls(tls: NonNullable<HandshakeParams['tls']>): Promise<void> {
    this.option(NBD_OPT_STARTTLS);
    const { type, payload } = await this.reply(NBD_OPT_STARTTLS);
    if (type !== NBD_REP_ACK || payload.length !== 0) throw new NbdProtocolError(`unexpected reply ${type} to option ${NBD_OPT_STARTTLS}`);
    await this.channel.startTls(tls.creds, tls.hostname);
  }

  /** SET_META_CONTEXT for one context: its id, or undefined if the server did not select it. */
  async setMetaContext(exportName: string, context: string): Promise<number | undefined> {
    this.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest(exportName, [context]));
    let id: number | undefined;
    for (;;) {
      const { type, payload } = await this.reply(NBD_OPT_SET_META_CONTEXT);
      if (type === NBD_REP_ERR_UNSUP) return undefined;
      if (type === NBD_REP_ACK) return id;
      if (type !== NBD_REP_META_CONTEXT) throw new NbdProtocolError(`unexpected reply ${type} to SET_META_CONTEXT`);
      const reply = decodeMetaContextReply(payload);
      if (reply.name === context) id = reply.id;
    }
  }

  /** GO asking for block sizes: the export, or undefined if the server has no GO (ERR_UNSUP). */
  async go(exportName: string): Promise<{ summary: ExportSummary; blockSize: BlockSizeInfo | undefined } | undefined> {
    this.option(NBD_OPT_GO, encodeInfoRequest(exportName, [NBD_INFO_BLOCK_SIZE]));
    let summary: ExportSummary | undefined;
    let blockSize: BlockSizeInfo | undefined;
    for (;;) {
      const { type, payload } = await this.reply(NBD_OPT_GO);
      if (type === NBD_REP_ERR_UNSUP) return undefined;
      if (type === NBD_REP_ACK) {
        this.transmitting = true;
        break;
      }
      if (type !== NBD_REP_INFO) throw new NbdProtocolError(`unexpected reply ${type} to NBD_OPT_GO`);
      const info = decodeInfoReply(payload);
      if (info.info === 'export') summary = { size: info.size, flags: info.flags };
      if (info.info === 'block-size') blockSize = { minimum: info.minimum, preferred: info.preferred, maximum: info.maximum };
    }
    if (summary === undefined) throw new NbdProtocolError('server did not send NBD_INFO_EXPORT');
    const problem = blockSize === undefined ? undefined : blockSizeProblem(blockSize);
    if (problem !== undefined) throw new NbdProtocolError(problem);
    return { summary, blockSize };
  }

  /** EXPORT_NAME: the server answers with the export, or closes the connection if it has no such export. */
  async exportName(exportName: string, zeroes: boolean): Promise<ExportSummary> {
    this.option(NBD_OPT_EXPORT_NAME, Buffer.from(exportName, 'utf8'));
    try {
      const summary = decodeExportNameReply(await this.channel.reader.read(10));
      this.transmitting = true;
      if (zeroes) await this.channel.reader.skip(NBD_ZERO_PAD_SIZE);
      return summary;
    } catch (error) {
      if (!(error instanceof StreamEndedError)) throw error;
      throw new BlockLayerError(`Server closed the connection after NBD_OPT_EXPORT_NAME: export '${exportName}' not available?`);
    }
  }
}

/** Runs the handshake on a fresh channel; on failure the caller drops the channel. */
export async function negotiate(channel: NbdChannel, params: HandshakeParams): Promise<NbdExportInfo> {
  const greeting = await channel.reader.read(16).catch((error: unknown) => {
    throw error instanceof StreamEndedError ? new BlockLayerError('Server connection closed unexpectedly') : error;
  });
  if (decodeGreetingMagic(greeting) === 'oldstyle') {
    if (params.tls !== undefined) throw new BlockLayerError('Server does not support STARTTLS');
    const summary = decodeOldstyleTail(await channel.reader.read(136));
    if (params.exportName !== '') throw new BlockLayerError('Server does not support non-empty export names');
    return { ...summary, style: 'oldstyle', structured: false, contextId: undefined, blockSize: undefined };
  }
  const handshakeFlags = (await channel.reader.read(2)).readUInt16BE(0);
  const fixed = (handshakeFlags & NBD_FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (handshakeFlags & NBD_FLAG_NO_ZEROES) !== 0;
  channel.send(encodeClientFlags((fixed ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? NBD_FLAG_C_NO_ZEROES : 0)));
  const n = new Negotiation(channel);
  if (!fixed && params.tls !== undefined) throw new BlockLayerError('Server does not support STARTTLS');
  if (!fixed) {
    const summary = await n.exportName(params.exportName, !noZeroes);
    return { ...summary, style: 'newstyle', structured: false, contextId: undefined, blockSize: undefined };
  }
  try {
    if (params.tls !== undefined) await n.startTls(params.tls);
    const structured = await n.simple(NBD_OPT_STRUCTURED_REPLY);
    const contextId = structured ? await n.setMetaContext(params.exportName, params.metaContext) : undefined;
    const go = await n.go(params.exportName);
    const base = { style: 'fixed-newstyle' as const, structured, contextId };
    if (go !== undefined) return { ...go.summary, ...base, blockSize: go.blockSize };
    return { ...(await n.exportName(params.exportName, !noZeroes)), ...base, blockSize: undefined };
  } catch (error) {
    // A courtesy, as qemu does: the server need not wait for a client that gave up.
    if (!channel.reader.ended) {
      channel.send(n.transmitting ? encodeRequest({ flags: 0, type: NBD_CMD_DISC, cookie: 0n, offset: 0, length: 0 }) : encodeOption(NBD_OPT_ABORT));
    }
    throw error;
  }
}
