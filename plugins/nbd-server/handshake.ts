/**
 * The server side of the NBD handshake (fixed newstyle), as qemu's
 * nbd/server.c answers it: greeting, client flags, then options until
 * EXPORT_NAME, GO, ABORT or a hard disconnect. Every option's data is
 * consumed whatever the answer, so a refused or malformed option leaves
 * the stream in step; only framing violations (a bad magic, bad client
 * flags, option data over 32 MiB, a bad EXPORT_NAME) drop the connection.
 * With TLS credentials every option but STARTTLS and ABORT is refused
 * with ERR_TLS_REQD until STARTTLS has upgraded the socket, and STARTTLS
 * forgets everything negotiated before it.
 */
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_SEND_DF,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_NAME,
  NBD_MAX_OPTION_DATA,
  NBD_MAX_PAYLOAD,
  NBD_MAX_STRING,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTION_HEADER_SIZE,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
} from '../../core/protocols/nbd/constants.js';
import {
  decodeClientFlags,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoReply,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeServerReply,
} from '../../core/protocols/nbd/handshake.js';
import { decodeString, NbdProtocolError } from '../../core/protocols/nbd/wire.js';
import type { NbdConnection } from './connection.js';
import { matchContexts, type MetaContext } from './meta-contexts.js';
import { InvalidOption, OptionData, readInfoRequest, readMetaQueries, saneName } from './option-data.js';
import type { NbdExport } from './nbd-export.js';

/** What transmission starts with. */
export interface Negotiated {
  export: NbdExport;
  structured: boolean;
  /** Contexts selected by SET_META_CONTEXT for this export. */
  contexts: MetaContext[];
  /** Transmission flags as sent to this client. */
  flags: number;
}

/** qemu's nbd_opt_lookup() names, used in its messages. */
const OPTION_NAMES: Record<number, string> = {
  1: 'export name',
  2: 'abort',
  3: 'list',
  4: 'peek export',
  5: 'starttls',
  6: 'info',
  7: 'go',
  8: 'structured reply',
  9: 'list meta context',
  10: 'set meta context',
};

function optionName(option: number): string {
  return OPTION_NAMES[option] ?? '<unknown>';
}

class OptionRefused extends Error {
  constructor(
    readonly type: number,
    message: string,
  ) {
    super(message);
  }
}

/** Negotiates with the client; the Negotiated once transmission starts, undefined after ABORT. */
export async function negotiate(c: NbdConnection): Promise<Negotiated | undefined> {
  await c.send([encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)]);
  const clientFlags = decodeClientFlags(await c.reader.read(4));
  if ((clientFlags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) {
    throw new NbdProtocolError(`unsupported client flags 0x${clientFlags.toString(16)}`);
  }
  return new Negotiation(c, (clientFlags & NBD_FLAG_C_FIXED_NEWSTYLE) !== 0, (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0).run();
}

class Negotiation {
  private structured = false;
  private tlsDone = false;
  private meta: { exportName: string; contexts: MetaContext[] } | undefined;

  constructor(
    private readonly c: NbdConnection,
    private readonly fixed: boolean,
    private readonly noZeroes: boolean,
  ) {}

  async run(): Promise<Negotiated | undefined> {
    for (;;) {
      const { option, length } = decodeOptionHeader(await this.c.reader.read(NBD_OPTION_HEADER_SIZE));
      if (length > NBD_MAX_PAYLOAD) throw new NbdProtocolError(`option ${option} of ${length} bytes is too long`);
      if (!this.fixed && option !== NBD_OPT_EXPORT_NAME) throw new NbdProtocolError('only EXPORT_NAME without fixed newstyle');
      if (option === NBD_OPT_EXPORT_NAME) return this.exportName(length);
      if (this.tlsRequired && option !== NBD_OPT_STARTTLS && option !== NBD_OPT_ABORT) {
        await this.c.reader.skip(length);
        await this.refuse(option, NBD_REP_ERR_TLS_REQD, `Option 0x${option.toString(16)} not permitted before TLS`);
        continue;
      }
      const known = option in OPTION_NAMES && option !== 4;
      if (!known || length > NBD_MAX_OPTION_DATA) {
        await this.c.reader.skip(length);
        if (!known) await this.refuse(option, NBD_REP_ERR_UNSUP, `Unsupported option ${option} (${optionName(option)})`);
        else await this.refuse(option, NBD_REP_ERR_INVALID, `option '${optionName(option)}' has unexpected length`);
        continue;
      }
      const data = await this.c.reader.read(length);
      try {
        const outcome = await this.option(option, data);
        if (outcome !== 'continue') return outcome;
      } catch (error) {
        if (error instanceof OptionRefused) await this.refuse(option, error.type, error.message);
        else if (error instanceof InvalidOption) await this.refuse(option, NBD_REP_ERR_INVALID, error.message);
        else throw error;
      }
    }
  }

  /** Answers one option whose data has been read; 'continue' to go on negotiating. */
  private async option(option: number, data: Buffer): Promise<Negotiated | undefined | 'continue'> {
    const tlsCreds = this.c.host.tlsCreds;
    switch (option) {
      case NBD_OPT_ABORT:
        await this.reply(option, NBD_REP_ACK);
        return undefined;
      case NBD_OPT_LIST:
        this.expectEmpty(option, data);
        for (const exp of this.c.host.listExports()) {
          await this.reply(option, NBD_REP_SERVER, encodeServerReply(exp.name, exp.settings.description ?? ''));
        }
        await this.reply(option, NBD_REP_ACK);
        return 'continue';
      case NBD_OPT_STARTTLS:
        this.expectEmpty(option, data);
        if (tlsCreds === undefined) throw new OptionRefused(NBD_REP_ERR_POLICY, 'TLS not configured');
        if (this.tlsDone) throw new OptionRefused(NBD_REP_ERR_INVALID, 'TLS already enabled');
        await this.reply(option, NBD_REP_ACK);
        await this.c.upgradeTls(tlsCreds);
        // Nothing agreed in plain text survives STARTTLS.
        this.tlsDone = true;
        this.structured = false;
        this.meta = undefined;
        return 'continue';
      case NBD_OPT_STRUCTURED_REPLY:
        this.expectEmpty(option, data);
        if (this.structured) throw new OptionRefused(NBD_REP_ERR_INVALID, 'structured reply already negotiated');
        this.structured = true;
        await this.reply(option, NBD_REP_ACK);
        return 'continue';
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        await this.metaContext(option, data);
        return 'continue';
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.info(option, data);
      default:
        throw new OptionRefused(NBD_REP_ERR_UNSUP, `Unsupported option ${option} (${optionName(option)})`);
    }
  }

  /** EXPORT_NAME cannot be refused: an unknown export (or one before TLS) closes the connection. */
  private async exportName(length: number): Promise<Negotiated> {
    if (length > NBD_MAX_STRING) throw new NbdProtocolError('export name too long');
    const name = decodeString(await this.c.reader.read(length), 'export name');
    if (this.tlsRequired) throw new NbdProtocolError('EXPORT_NAME before TLS');
    const exp = this.c.host.findExport(name);
    if (exp === undefined) throw new NbdProtocolError(`export '${name}' not present`);
    const negotiated = this.negotiated(exp);
    await this.c.send([encodeExportNameReply({ size: exp.size, flags: negotiated.flags }, this.noZeroes)]);
    return negotiated;
  }

  /** INFO and GO: the export's name (if asked), description (if any), block sizes and size/flags, then ACK. */
  private async info(option: number, data: Buffer): Promise<Negotiated | 'continue'> {
    const { exportName, infos } = readInfoRequest(new OptionData(data, optionName(option)));
    const exp = this.findExport(exportName);
    const askedBlockSize = infos.includes(NBD_INFO_BLOCK_SIZE);
    const negotiated = this.negotiated(exp);
    if (infos.includes(NBD_INFO_NAME)) await this.reply(option, NBD_REP_INFO, encodeInfoReply({ info: 'name', name: exp.name }));
    // qemu sends the description whether asked for or not.
    const description = exp.settings.description;
    if (description !== undefined) {
      await this.reply(option, NBD_REP_INFO, encodeInfoReply({ info: 'description', description }));
    }
    const sizes = exp.blockSizes(option === NBD_OPT_INFO || askedBlockSize);
    await this.reply(option, NBD_REP_INFO, encodeInfoReply({ info: 'block-size', ...sizes }));
    await this.reply(option, NBD_REP_INFO, encodeInfoReply({ info: 'export', size: exp.size, flags: negotiated.flags }));
    await this.reply(option, NBD_REP_ACK);
    return option === NBD_OPT_GO ? negotiated : 'continue';
  }

  /** LIST_META_CONTEXT lists, SET_META_CONTEXT selects (replacing the earlier selection, even when it fails). */
  private async metaContext(option: number, data: Buffer): Promise<void> {
    const setting = option === NBD_OPT_SET_META_CONTEXT;
    if (setting) {
      this.meta = undefined;
      if (!this.structured) {
        throw new OptionRefused(NBD_REP_ERR_INVALID, `request option '${optionName(option)}' when structured reply is not negotiated`);
      }
    }
    const fields = new OptionData(data, optionName(option));
    const exp = this.findExport(fields.name());
    const queries = readMetaQueries(fields);
    const contexts = matchContexts(exp, queries, !setting);
    for (const context of contexts) {
      await this.reply(option, NBD_REP_META_CONTEXT, encodeMetaContextReply(setting ? context.id : 0, context.name));
    }
    await this.reply(option, NBD_REP_ACK);
    if (setting) this.meta = { exportName: exp.name, contexts };
  }

  private get tlsRequired(): boolean {
    return this.c.host.tlsCreds !== undefined && !this.tlsDone;
  }

  private negotiated(exp: NbdExport): Negotiated {
    const contexts = this.structured && this.meta?.exportName === exp.name ? this.meta.contexts : [];
    const flags = this.structured ? exp.transmissionFlags : exp.transmissionFlags & ~NBD_FLAG_SEND_DF;
    return { export: exp, structured: this.structured, contexts, flags };
  }

  private findExport(name: string): NbdExport {
    const exp = this.c.host.findExport(name);
    if (exp === undefined) throw new OptionRefused(NBD_REP_ERR_UNKNOWN, `export '${saneName(name)}' not present`);
    return exp;
  }

  private expectEmpty(option: number, data: Buffer): void {
    if (data.length !== 0) throw new OptionRefused(NBD_REP_ERR_INVALID, `option '${optionName(option)}' has unexpected length`);
  }

  private reply(option: number, type: number, payload?: Buffer): Promise<void> {
    return this.c.send([encodeOptionReply(option, type, payload)]);
  }

  private refuse(option: number, type: number, message: string): Promise<void> {
    return this.reply(option, type, Buffer.from(message.slice(0, 512), 'utf8'));
  }
}
