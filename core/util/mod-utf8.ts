/**
 * QEMU's "modified UTF-8" rules (util/unicode.c). They decide which string
 * bytes the QMP parser accepts, how raw bytes that end up in an error message
 * are shown to the client, and which characters QEMU's JSON writer replaces.
 *
 * Modified UTF-8 is UTF-8 that also accepts the overlong "\xC0\x80" for
 * U+0000, and rejects surrogates, noncharacters and anything beyond U+10FFFF.
 */

/** Result of decoding one sequence: the code point (-1 if invalid) and where the next one starts. */
export interface Utf8Step {
  codePoint: number;
  next: number;
}

// Smallest code point that needs a sequence of 2, 3, 4, 5, 6 bytes (overlong detection).
const MIN_CODE_POINT = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];

/** Whether QEMU accepts `cp` as a character: in range, not a surrogate, not a noncharacter. */
export function isValidCodePoint(cp: number): boolean {
  if (cp < 0 || cp > 0x10ffff) return false;
  if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) return false;
  return cp < 0xd800 || cp > 0xdfff;
}

/**
 * Decodes the sequence starting at `bytes[start]`, reading no further than
 * `end` (exclusive). A sequence cut short by `end` counts as missing
 * continuation bytes, as in QEMU where the string ends in a NUL.
 *
 * Invalid sequences consume: one byte for 0xFE/0xFF or a stray continuation
 * byte; lead plus the continuation bytes present for a truncated sequence;
 * the whole sequence when it is well-formed but not a valid character.
 */
export function decodeModUtf8(bytes: Uint8Array, start: number, end: number): Utf8Step {
  const lead = bytes[start] ?? 0;
  if (lead < 0x80) return { codePoint: lead, next: start + 1 };
  if (lead >= 0xfe || (lead & 0x40) === 0) return { codePoint: -1, next: start + 1 };
  let length = 2;
  while (length < 6 && (lead & (0x80 >> length)) !== 0) length++;
  // Arithmetic instead of bit shifts: a 6-byte sequence carries 31 bits.
  let cp = lead & ((0x80 >> length) - 1);
  let pos = start + 1;
  for (let i = 1; i < length; i++, pos++) {
    const byte = pos < end ? (bytes[pos] ?? 0) : 0;
    if ((byte & 0xc0) !== 0x80) return { codePoint: -1, next: pos };
    cp = cp * 64 + (byte & 0x3f);
  }
  const minimum = MIN_CODE_POINT[length - 2] ?? 0;
  const overlong = cp < minimum && !(cp === 0 && length === 2);
  return { codePoint: isValidCodePoint(cp) && !overlong ? cp : -1, next: pos };
}

/**
 * Turns bytes QEMU would print into the string the client sees: QEMU's
 * JSON writer shows every invalid sequence as U+FFFD, and a C string ends at
 * the first NUL byte.
 */
export function decodeModUtf8Lossy(bytes: Buffer): string {
  const nul = bytes.indexOf(0);
  const end = nul < 0 ? bytes.length : nul;
  let text = '';
  for (let pos = 0; pos < end; ) {
    const asciiEnd = asciiRunEnd(bytes, pos, end);
    if (asciiEnd > pos) {
      text += bytes.toString('latin1', pos, asciiEnd);
      pos = asciiEnd;
      continue;
    }
    const step = decodeModUtf8(bytes, pos, end);
    text += String.fromCodePoint(step.codePoint < 0 ? 0xfffd : step.codePoint);
    pos = step.next;
  }
  return text;
}

/** End of the run of ASCII bytes starting at `pos` (bulk conversion keeps big tokens fast). */
function asciiRunEnd(bytes: Uint8Array, pos: number, end: number): number {
  while (pos < end && (bytes[pos] ?? 0x80) < 0x80) pos++;
  return pos;
}
