/**
 * Persistent dirty bitmaps as QEMU reads them from an image: the list
 * qemu-img info gives, and a bitmap's dirty ranges as qemu-nbd -B serves
 * them (read with nbdinfo --map=qemu:dirty-bitmap:NAME).
 */
import { execFile, spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface DirtyRange {
  offset: number;
  length: number;
}

/** `format-specific.data.bitmaps` of `qemu-img info -U` (undefined: the image has none). */
export async function qemuImageBitmaps(image: string): Promise<unknown> {
  const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', '-f', 'qcow2', image]);
  return (JSON.parse(stdout) as { 'format-specific': { data: { bitmaps?: unknown } } })['format-specific'].data.bitmaps;
}

/** The dirty ranges of bitmap `name` of qcow2 `image`, as qemu-nbd -B serves them; rejects where qemu-nbd refuses it. */
export async function qemuDirtyRanges(image: string, name: string): Promise<DirtyRange[]> {
  const socket = `${image}.${name}.sock`;
  const server = spawn('qemu-nbd', ['-r', '-f', 'qcow2', '-B', name, '-k', socket, image], { stdio: ['ignore', 'ignore', 'pipe'] });
  let errors = '';
  server.stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
  const exited = new Promise((resolve) => server.once('exit', resolve));
  try {
    for (let i = 0; !(await stat(socket).catch(() => undefined))?.isSocket(); i++) {
      if (server.exitCode !== null || i > 200) throw new Error(`qemu-nbd -B ${name} did not start: ${errors}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    const { stdout } = await run('nbdinfo', ['--json', `--map=qemu:dirty-bitmap:${name}`, `nbd+unix:///?socket=${socket}`]);
    const map = JSON.parse(stdout) as { offset: number; length: number; type: number }[];
    return map.filter((e) => e.type === 1).map(({ offset, length }) => ({ offset, length }));
  } finally {
    server.kill();
    await exited;
  }
}
