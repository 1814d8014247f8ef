/**
 * A new backing file for an open image (QEMU's qcow2_change_backing_file
 * and qcow2_update_header), when stream or commit rewrites the chain. In
 * crash-safe order: the cached metadata is written back and the file
 * flushed, so all data written so far (what a stream copied up) is durable
 * before the header stops naming the old backing file; then header cluster
 * 0 is rewritten in one write (qcow2-header.ts) and flushed. Reads go
 * through the new backing child from then on. Also a backing node linked
 * to (or opened for) an image opened without one, the header unchanged.
 */
import type { BackingFileChange, DriverOpenContext } from '../../core/block/driver.js';
import type { NodeChild } from '../../core/block/node-edge.js';
import { openBacking } from './qcow2-backing.js';
import { readFixedHeader, headerWithBacking } from './qcow2-header.js';
import { checkUsable, flushFile, type Qcow2Image, readFile, writeFile } from './qcow2-image.js';
import { backingOverridden } from './qcow2-open.js';
import { prepareForWrite, syncMetadata } from './qcow2-sync.js';

export async function changeBackingFile(image: Qcow2Image, change: BackingFileChange): Promise<void> {
  checkUsable(image);
  await image.lock.run(async () => {
    await prepareForWrite(image);
    await syncMetadata(image);
    if (image.unflushed) await flushFile(image);
    const cluster0 = Buffer.alloc(image.g.clusterSize);
    await readFile(image.file, 0, cluster0);
    const rewritten = headerWithBacking(cluster0, readFixedHeader(cluster0), change);
    await writeFile(image, 0, rewritten);
    await flushFile(image);
    image.backingName = change.name;
    image.backingFormat = change.name === undefined ? undefined : change.format;
  });
  image.backing = change.child;
  // The header names the backing node now, unless the name given is another one (QEMU's auto_backing_file).
  image.explicitBacking = await backingOverridden(change.child, change.name);
}

/** The graph linked (or unlinked) a backing node; the header stays as it is. */
export async function linkBacking(image: Qcow2Image, child: NodeChild | undefined): Promise<void> {
  image.backing = child;
  image.explicitBacking = await backingOverridden(child, image.backingName);
}

/** Opens the backing file the header names (the image was opened with `backing: null`). */
export async function openBackingFile(image: Qcow2Image, openChild: DriverOpenContext<unknown>['openChild']): Promise<void> {
  const imagePath = image.imagePath ?? image.name;
  const header = { name: image.backingName, format: image.backingFormat };
  await linkBacking(image, await openBacking({ givenOptions: {}, children: new Map(), openChild }, image.name, imagePath, header));
}
