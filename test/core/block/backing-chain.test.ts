/**
 * The chain seams stream and commit build on: walking a chain through
 * filters (next node, skipping filters, overlay, chain membership), finding
 * a backing image by file name (exact, relative to the overlay), allocation
 * above a base (a shorter layer allocates zeroes past its end), re-pointing
 * or removing a node's backing link (implicit nodes left alone close), and
 * a removed device cancelling the jobs that hold its node.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import {
  allocatedAbove,
  backingChainNext,
  chainContains,
  findBackingImage,
  findOverlay,
  nextInChain,
  skipFilters,
} from '../../../core/block/backing-chain.js';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { BlockNode } from '../../../core/block/block-node.js';
import { defineBlockDriver } from '../../../core/block/driver.js';
import type { ImageCreator } from '../../../core/block/image-creator.js';
import type { NodeChild } from '../../../core/block/node-edge.js';
import type { JobManager } from '../../../core/job/job-manager.js';
import { Qapi } from '../../../core/schema/qapi.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';
import stepJobPlugin from '../../fixtures/step-job/index.js';

const MiB = 1024 * 1024;

const passFilter = defineBlockDriver<Record<string, never>, { file: NodeChild }>({
  name: 'x-pass',
  kind: 'filter',
  summary: 'test filter',
  options: Qapi.struct('BlockdevOptionsXPass', {}),
  children: [{ name: 'file', required: true, filtered: true }],
  open: async ({ children }) => ({ file: children.get('file')! }),
  getLength: (state) => state.file.length,
});

interface Chain {
  layer: BlockLayer;
  dir: string;
  base: BlockNode;
  mid: BlockNode;
  top: BlockNode;
}

/** base (2 MiB, 0–1 MiB written) ← mid (4 MiB, 2–3 MiB written) ← top (4 MiB, nothing), qcow2 files made by our own driver. */
async function chain(t: ExecutionContext): Promise<Chain> {
  const layer = await createTestLayer({ plugins: ['file', 'qcow2', 'job-commands', stepJobPlugin] });
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-chain-core-'));
  t.teardown(async () => {
    await layer.close();
    await rm(dir, { recursive: true, force: true });
  });
  const creator = layer.container.get<ImageCreator>(TOKENS.ImageCreator);
  const path = (name: string) => join(dir, `${name}.qcow2`);
  await creator.create('qcow2', { filename: path('base'), size: 2 * MiB });
  await creator.create('qcow2', { filename: path('mid'), size: 4 * MiB, backing_file: path('base'), backing_fmt: 'qcow2' });
  await creator.create('qcow2', { filename: path('top'), size: 4 * MiB, backing_file: 'mid.qcow2', backing_fmt: 'qcow2' });
  const file = (name: string) => ({ driver: 'file', filename: path(name) });
  const base = await layer.graph.add({ driver: 'qcow2', 'node-name': 'base', file: file('base') });
  const mid = await layer.graph.add({ driver: 'qcow2', 'node-name': 'mid', file: file('mid'), backing: 'base' });
  const top = await layer.graph.add({ driver: 'qcow2', 'node-name': 'top', file: file('top'), backing: 'mid' });
  await base.write(0, Buffer.alloc(MiB, 1));
  await mid.write(2 * MiB, Buffer.alloc(MiB, 2));
  return { layer, dir, base, mid, top };
}

test('walking a chain through a filter; overlays; membership', async (t) => {
  const { layer, base, mid, top } = await chain(t);
  const filter = await layer.graph.openFilter(passFilter, mid, 'f');
  layer.graph.replace(mid, filter);
  t.is(nextInChain(top), filter);
  t.is(nextInChain(filter), mid);
  t.is(skipFilters(filter), mid);
  t.is(backingChainNext(top), mid);
  t.is(findOverlay(top, base), mid);
  t.is(findOverlay(top, mid), top);
  t.is(findOverlay(top, filter), top);
  t.is(findOverlay(top, undefined), base, 'the bottom-most image');
  t.true(chainContains(top, filter) && chainContains(top, base) && chainContains(top, top));
  t.false(chainContains(mid, top));
  await layer.graph.dropFilter(filter);
});

test('a backing image by file name: as the node names it, as the overlay records it, relative to the overlay', async (t) => {
  const { dir, base, mid, top } = await chain(t);
  t.is(await findBackingImage(top, join(dir, 'base.qcow2')), base);
  t.is(await findBackingImage(top, 'mid.qcow2'), mid, 'as recorded (relative)');
  t.is(await findBackingImage(top, './base.qcow2'), base, 'relative to the overlay, by canonical path');
  t.is(await findBackingImage(top, join(dir, 'top.qcow2')), undefined, 'not the node itself');
  t.is(await findBackingImage(mid, join(dir, 'mid.qcow2')), undefined);
  t.is(await findBackingImage(top, '/nonexistent'), undefined);
});

test('allocation above a base: per layer, the first run; a shorter layer allocates past its end', async (t) => {
  const { base, mid, top } = await chain(t);
  t.deepEqual(await allocatedAbove(top, base, false, 0, 4 * MiB), { allocated: false, bytes: 2 * MiB });
  t.deepEqual(await allocatedAbove(top, base, true, 0, 4 * MiB), { allocated: true, bytes: MiB });
  t.deepEqual(await allocatedAbove(top, base, false, 2 * MiB, 2 * MiB), { allocated: true, bytes: MiB });
  t.deepEqual(await allocatedAbove(top, undefined, false, 3 * MiB, MiB), { allocated: true, bytes: MiB }, 'past the 2 MiB base: zeroes');
  t.deepEqual(await allocatedAbove(top, top, true, 2 * MiB, MiB), { allocated: false, bytes: MiB });
  t.deepEqual(await allocatedAbove(mid, mid, true, 2 * MiB, 2 * MiB), { allocated: true, bytes: MiB });
});

test('setBacking re-points the same edge, or removes it; an implicit node left alone closes', async (t) => {
  const { layer, dir, base, mid, top } = await chain(t);
  const edge = top.children.get('backing')!;
  await layer.graph.setBacking(top, base);
  t.is(top.children.get('backing'), edge, 'the same edge: the driver keeps its child');
  t.is(edge.node, base);
  t.false([...mid.parents].some((e) => e === edge));
  t.true(layer.graph.list().includes(mid), 'a named node stays');
  await t.throwsAsync(layer.graph.setBacking(base, top), { message: "Making 'top' a backing file of 'base' would create a loop" });
  await layer.graph.setBacking(top, undefined);
  t.is(top.children.get('backing'), undefined);
  // A chain opened from the headers: its nodes are implicit and close with the link (force-share: 'top' has the image open read-write).
  const opened = await layer.graph.add({ driver: 'qcow2', 'node-name': 'top2', 'read-only': true, 'force-share': true, file: { driver: 'file', filename: join(dir, 'top.qcow2') } });
  const implicitMid = opened.children.get('backing')!.node;
  t.true(implicitMid.implicit);
  await layer.graph.setBacking(opened, undefined);
  t.false(layer.graph.list().includes(implicitMid), 'the implicit backing chain closed');
});

test('a removed device cancels the block jobs holding its node', async (t) => {
  const { layer, top } = await chain(t);
  const jobs = layer.container.get<JobManager>(TOKENS.JobManager);
  const events: string[] = [];
  layer.hooks.event.tap('test', (e) => events.push(e.event === 'JOB_STATUS_CHANGE' ? String(e.data!.status) : e.event));
  layer.graph.attachBackend('drive0', top);
  const job = jobs.create({ id: 'j', type: 'x-step', driver: () => ({ run: async (j) => { for (;;) await j.sleep(Number.POSITIVE_INFINITY); } }) });
  job.hold(layer.graph.attach(job, top, 'main node'));
  job.start();
  layer.graph.detachBackend('drive0');
  await job.txn.whenConcluded(job);
  t.deepEqual(events, ['created', 'running', 'aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null']);
});
