/**
 * A fresh temporary directory for one test, removed when the test ends.
 * `mkdtemp` alone leaves `/tmp/blocklayer-*` behind on every run; the
 * teardown removes it whether the test passed or failed. Teardowns run in
 * reverse order of registration, so call this before starting anything
 * (a daemon, a child process) whose own teardown must stop it first.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';

export async function tempDir(t: ExecutionContext, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
