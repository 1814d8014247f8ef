/**
 * Peer programs (qemu-img, qemu-io, nbdkit …) that interop tests compare
 * against. A missing peer skips the test when run by hand, but fails it
 * under BLOCKLAYER_REQUIRE_PEERS=1, as CI runs the suite.
 *
 *   test('reads what qemu-io wrote', async (t) => {
 *     if (!requirePeer(t, 'qemu-io')) return;
 *     …
 *   });
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import type { ExecutionContext } from 'ava';

const found = new Map<string, string | undefined>();

/** The peer's path on PATH (or the absolute path given), if it is an executable. */
export function peerPath(peer: string): string | undefined {
  if (!found.has(peer)) {
    const candidates = isAbsolute(peer) ? [peer] : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((dir) => join(dir, peer));
    found.set(peer, candidates.find(isExecutable));
  }
  return found.get(peer);
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * True if `peer` is installed. Otherwise the test is marked as passed with a
 * "skipped" log line, or failed under BLOCKLAYER_REQUIRE_PEERS=1; either way
 * the caller returns at once.
 */
export function requirePeer(t: ExecutionContext, peer: string): boolean {
  if (peerPath(peer) !== undefined) return true;
  if (process.env.BLOCKLAYER_REQUIRE_PEERS === '1') {
    t.fail(`peer '${peer}' is not installed and BLOCKLAYER_REQUIRE_PEERS=1`);
  } else {
    t.log(`skipped: peer '${peer}' is not installed`);
    t.pass();
  }
  return false;
}

/** True if qemu-img and qemu-io are there (else the test is skipped, or failed in CI). */
export function havePeers(t: ExecutionContext): boolean {
  return requirePeer(t, 'qemu-img') && requirePeer(t, 'qemu-io');
}

/** Runs `body` on the session `open` makes, if qemu-img and qemu-io are there (havePeers), and closes it after, also on failure. */
export async function withPeerSession<S extends { close(): Promise<unknown> }>(
  t: ExecutionContext,
  open: () => Promise<S>,
  body: (s: S) => Promise<void>,
): Promise<void> {
  if (!havePeers(t)) return;
  const s = await open();
  try {
    await body(s);
  } finally {
    await s.close();
  }
}
