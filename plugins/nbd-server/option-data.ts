/**
 * Reading the data of INFO/GO and LIST/SET_META_CONTEXT on the server
 * side, field by field and with qemu's messages ("Inconsistent lengths in
 * option go", "Invalid name length: 5000"): a malformed option is refused
 * with ERR_INVALID and those words, never a disconnect.
 */
import { NBD_MAX_STRING } from '../../core/protocols/nbd/constants.js';

/** The option's data is malformed; answered with ERR_INVALID and this text. */
export class InvalidOption extends Error {}

export class OptionData {
  private at = 0;

  constructor(
    private readonly data: Buffer,
    /** The option's name in qemu's messages ('go', 'set meta context'). */
    private readonly option: string,
  ) {}

  get remaining(): number {
    return this.data.length - this.at;
  }

  u16(): number {
    return this.take(2).readUInt16BE(0);
  }

  u32(): number {
    return this.take(4).readUInt32BE(0);
  }

  /** A name with its u32 length, at most 4096 bytes (qemu's nbd_opt_read_name). */
  name(): string {
    const length = this.u32();
    if (length > NBD_MAX_STRING) throw new InvalidOption(`Invalid name length: ${length}`);
    return this.take(length).toString('utf8');
  }

  take(length: number): Buffer {
    if (length > this.remaining) throw new InvalidOption(`Inconsistent lengths in option ${this.option}`);
    this.at += length;
    return this.data.subarray(this.at - length, this.at);
  }
}

/** INFO/GO: the export name, then u16 N and exactly N u16 info requests. */
export function readInfoRequest(data: OptionData): { exportName: string; infos: number[] } {
  const exportName = data.name();
  const count = data.u16();
  if (count !== Math.floor(data.remaining / 2)) data.take(data.remaining + 1);
  return { exportName, infos: Array.from({ length: count }, () => data.u16()) };
}

/**
 * The queries of LIST/SET_META_CONTEXT, after the export name: u32 N, then
 * N queries each with a u32 length. Queries qemu skips (shorter than 5 or
 * longer than 4096 bytes) are dropped; they could match nothing.
 */
export function readMetaQueries(data: OptionData): string[] {
  const count = data.u32();
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    const length = data.u32();
    const query = data.take(length);
    if (length >= 5 && length <= NBD_MAX_STRING) queries.push(query.toString('utf8'));
  }
  return queries;
}

/** An export name as qemu quotes it in messages: at most 80 characters, then '...'. */
export function saneName(name: string): string {
  return name.length < 80 ? name : `${name.slice(0, 80)}...`;
}
