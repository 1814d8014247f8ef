/**
 * Reads the QEMU 7.2 transcripts in test/fixtures/qemu-transcripts/
 * ('-> ' lines were sent, '<- ' lines received) into exchanges we can
 * replay against our daemon.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const TRANSCRIPT_DIR = fileURLToPath(new URL('../fixtures/qemu-transcripts/', import.meta.url));

export interface Exchange {
  /** What was sent: a request, possibly split over several lines, or raw bytes. */
  sent: Buffer;
  /** The commands the request names (several requests may share a line). */
  commands: string[];
  /** Replies (not events) QEMU sent for it. */
  replies: Record<string, unknown>[];
}

export interface Transcript {
  greeting: Record<string, unknown>;
  exchanges: Exchange[];
}

function commandsOf(text: string): string[] {
  return [...text.matchAll(/["'](?:execute|exec-oob)["']\s*:\s*["']([^"']+)["']/g)].map((m) => m[1]!);
}

export function readTranscript(name: string): Transcript {
  const lines = readFileSync(`${TRANSCRIPT_DIR}${name}`, 'utf8').split('\n');
  let greeting: Record<string, unknown> | undefined;
  const exchanges: Exchange[] = [];
  let current: Exchange | undefined;
  for (const line of lines) {
    if (line.startsWith('-> ')) {
      const text = line.slice(3);
      // The harness sent a raw 0xFF byte; the transcript shows it decoded as Latin-1.
      const bytes = text === 'ÿ' ? Buffer.from([0xff, 0x0a]) : Buffer.from(`${text}\n`);
      if (current !== undefined && current.replies.length === 0 && isContinuation(current.sent)) {
        current.sent = Buffer.concat([current.sent, bytes]);
        current.commands.push(...commandsOf(text));
      } else {
        current = { sent: bytes, commands: commandsOf(text), replies: [] };
        exchanges.push(current);
      }
    } else if (line.startsWith('<- ')) {
      const message = JSON.parse(line.slice(3)) as Record<string, unknown>;
      if ('QMP' in message) greeting = message;
      else if (!('event' in message)) current?.replies.push(message);
    }
  }
  if (greeting === undefined) throw new Error(`${name}: no greeting`);
  return { greeting, exchanges };
}

/** A request whose braces are not balanced yet continues on the next '-> ' line. */
function isContinuation(sent: Buffer): boolean {
  const text = sent.toString('latin1');
  if (!text.trimStart().startsWith('{')) return false;
  let depth = 0;
  for (const c of text) {
    if (c === '{') depth++;
    else if (c === '}') depth--;
  }
  return depth > 0;
}
