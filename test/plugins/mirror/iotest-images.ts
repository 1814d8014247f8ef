/**
 * The images of qemu-iotests 041 and 151, made the way iotests makes them:
 * `create_image` (a fully allocated raw file, each 512-byte sector marked
 * with its number at both ends), qcow2 overlays with a raw backing file
 * (the backing format recorded, as blocklayer does not probe), and the
 * usual job waits (complete_and_wait, cancel_and_wait, wait_ready).
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import type { ExecutionContext } from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { EventLog } from './mirror-session.js';

/** iotests.create_image: `size` bytes, sector i holding i (big-endian int32) at offsets 0 and 508. */
export function createImage(path: string, size: number): void {
  const image = Buffer.alloc(size);
  for (let sector = 0; sector * 512 < size; sector++) {
    image.writeInt32BE(sector, sector * 512);
    if (sector * 512 + 512 <= size) image.writeInt32BE(sector, sector * 512 + 508);
  }
  writeFileSync(path, image);
}

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

export function qemuIo(image: string, format: string, ...commands: string[]): void {
  execFileSync('qemu-io', ['-f', format, ...commands.flatMap((c) => ['-c', c]), image], { stdio: 'ignore' });
}

/** A qcow2 image backed by a raw file (041's test.img and targets). */
export function qcow2Over(path: string, backing: string, options: string[] = []): void {
  qemuImg('create', '-q', '-f', 'qcow2', '-o', [`backing_file=${backing}`, 'backing_fmt=raw', ...options].join(','), path);
}

/** blockdev-add options of a qcow2 image over a file. */
export function qcow2Node(name: string, path: string): Record<string, unknown> {
  return { driver: 'qcow2', 'node-name': name, file: { driver: 'file', filename: path } };
}

/** complete_and_wait: waits for READY (unless told not to), completes, waits for COMPLETED; returns its data. */
export async function completeAndWait(
  layer: BlockLayer,
  log: EventLog,
  id: string,
  waitReady = true,
): Promise<Record<string, unknown>> {
  if (waitReady) await log.wait('BLOCK_JOB_READY', id);
  await layer.execute('block-job-complete', { device: id });
  const completed = await log.wait('BLOCK_JOB_COMPLETED', id);
  await log.status(id, 'null');
  return completed.data!;
}

/** cancel_and_wait: block-job-cancel (force or not) and the job's last BLOCK_JOB_* event. */
export async function cancelAndWait(layer: BlockLayer, log: EventLog, id: string, force: boolean): Promise<{ event: string; data: Record<string, unknown> }> {
  await layer.execute('block-job-cancel', { device: id, force });
  const end = await log.waitFor((e) => (e.event === 'BLOCK_JOB_CANCELLED' || e.event === 'BLOCK_JOB_COMPLETED') && e.data?.device === id, `${id} ended`);
  await log.status(id, 'null');
  return { event: end.event, data: end.data! };
}

/** wait_ready_and_cancel: READY, then a soft cancel, which completes the job (no pivot). */
export async function waitReadyAndCancel(t: ExecutionContext, layer: BlockLayer, log: EventLog, id: string): Promise<void> {
  await log.wait('BLOCK_JOB_READY', id);
  const end = await cancelAndWait(layer, log, id, false);
  t.is(end.event, 'BLOCK_JOB_COMPLETED', 'a soft cancel after READY completes the job');
}

export async function assertNoActiveJobs(t: ExecutionContext, layer: BlockLayer): Promise<void> {
  t.deepEqual(await layer.execute('query-block-jobs'), [], 'no active block jobs');
}
