/**
 * The images check.test.ts holds up against `qemu-img check`: clean ones
 * of many shapes, and damaged ones (each damage patched into an image
 * qemu-img and qemu-io made), one per kind of finding.
 */
import { join } from 'node:path';
import {
  COPIED,
  create,
  grow,
  hostCluster,
  io,
  l1EntryAt,
  l2EntryAt,
  patchU64,
  qemuImg,
  readU64,
  reftableEntryAt,
  setRefcount,
} from './check-damage.js';

export interface CheckCase {
  name: string;
  /** Builds the image at `path` (other files go into its directory). */
  build(path: string): Promise<void>;
  /**
   * Ours and QEMU's repaired images cannot be held up with `qemu-img
   * compare` (it fails on both, e.g. on an unaligned L2 entry); their
   * bytes are compared instead.
   */
  unreadable?: boolean;
  /**
   * Repairs after which our file differs from QEMU's on purpose, and why:
   * only the exit code of `qemu-img check` afterwards is compared then, with
   * the guest content.
   */
  fileDiffers?: { repairs: readonly ('leaks' | 'all')[]; why: string };
}

const KiB = 1024;
const MiB = 1024 * KiB;

/** 64 MiB, 64 KiB clusters: data at 0 (two clusters) and 1M, a compressed cluster at 2M. */
async function base(path: string, options = ''): Promise<void> {
  await create(path, '64M', options);
  await io(path, 'write -P 0x11 0 128k', 'write -P 0x22 1M 64k', 'write -c -P 0x33 2M 64k');
}

/** An image made by qemu-img create and qemu-io commands. */
const made =
  (size: string, options: string, ...commands: string[]) =>
  async (path: string): Promise<void> => {
    await create(path, size, options);
    if (commands.length > 0) await io(path, ...commands);
  };

/** base(options), then the refcount of the host cluster of guest offset `guest` set to `value`. */
const refcount =
  (guest: number, value: number, options = '') =>
  async (path: string): Promise<void> => {
    await base(path, options);
    await setRefcount(path, await hostCluster(path, guest), value);
  };

/** base(), then the 64-bit entry at `entry(path)` changed by `update`. */
const patched =
  (entry: (path: string) => Promise<number>, update: (old: bigint) => bigint) =>
  async (path: string): Promise<void> => {
    await base(path);
    await patchU64(path, await entry(path), update);
  };

const l1 = (path: string) => l1EntryAt(path, 0);
const l2 = (guest: number) => (path: string) => l2EntryAt(path, guest);
const reftable = (path: string) => reftableEntryAt(path, 0);

async function withSnapshot(path: string): Promise<void> {
  await base(path);
  await qemuImg('snapshot', '-c', 's1', path);
  await io(path, 'write -P 0x44 0 64k');
}

const clean: CheckCase[] = [
  { name: 'compressed clusters', build: made('64M', '', 'write -c -P 0x11 0 64k', 'write -c -P 0x12 64k 64k', 'write -c -P 0x13 5M 192k') },
  { name: 'zero clusters', build: made('64M', '', 'write -P 0x11 0 192k', 'write -z 0 64k', 'write -z -u 64k 64k', 'write -z 2M 64k') },
  {
    name: 'internal snapshots',
    build: async (p) => {
      await withSnapshot(p);
      await io(p, 'write -P 0x55 4M 64k');
      await qemuImg('snapshot', '-c', 's2', p);
      await io(p, 'write -P 0x66 64k 4k');
    },
  },
  {
    name: 'persistent bitmaps',
    build: async (p) => {
      await base(p);
      await qemuImg('bitmap', '--add', p, 'b0');
      await qemuImg('bitmap', '--add', '-g', '65536', p, 'b1');
      await qemuImg('bitmap', '--add', '--disable', p, 'b2');
    },
    fileDiffers: {
      repairs: ['leaks', 'all'],
      why: 'QEMU rewrites persistent bitmaps (new tables and data clusters) when it closes a writable image; blocklayer leaves them in place',
    },
  },
  {
    name: 'a backing overlay',
    build: async (p) => {
      const backing = join(p, '..', 'backing.qcow2');
      await base(backing);
      await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'backing.qcow2', '-F', 'qcow2', p);
      await io(p, 'write -P 0x22 4k 4k', 'write -z 512k 64k', 'discard 0 64k');
    },
  },
  { name: 'compat=0.10', build: (p) => base(p, 'compat=0.10').then(() => io(p, 'write -z 1M 64k')) },
  { name: 'refcount_bits=1', build: (p) => base(p, 'refcount_bits=1') },
  { name: 'refcount_bits=8', build: (p) => base(p, 'refcount_bits=8') },
  { name: 'refcount_bits=64', build: (p) => base(p, 'refcount_bits=64') },
  { name: 'cluster_size=512', build: made('16M', 'cluster_size=512', 'write -P 0x11 0 300k', 'write -P 0x12 8M 64k', 'write -c -P 0x13 12M 4k') },
  { name: 'cluster_size=2M', build: made('64M', 'cluster_size=2M', 'write -P 0x11 0 128k', 'write -P 0x12 10M 4M', 'write -c -P 0x13 40M 2M') },
  { name: 'metadata preallocation', build: made('16M', 'preallocation=metadata') },
];

const damaged: CheckCase[] = [
  {
    name: 'a leaked cluster',
    build: async (p) => {
      await base(p);
      const end = (await hostCluster(p, 1 * MiB)) + 2;
      await grow(p, 2 * 64 * KiB);
      await setRefcount(p, end, 1);
    },
  },
  { name: 'a refcount too high on a data cluster', build: refcount(0, 3) },
  { name: 'a refcount too high, refcount_bits=64', build: refcount(1 * MiB, 77, 'refcount_bits=64') },
  { name: "a refcount too low on a snapshot's cluster", build: (p) => withSnapshot(p).then(async () => setRefcount(p, await hostCluster(p, 64 * KiB), 1)) },
  { name: 'refcount 0 on a data cluster', build: refcount(1 * MiB, 0) },
  { name: 'refcount 0 on a data cluster, refcount_bits=1', build: refcount(0, 0, 'refcount_bits=1') },
  { name: 'refcount 0 on a data cluster, compat=0.10', build: refcount(0, 0, 'compat=0.10') },
  {
    name: 'refcount 0 on a data cluster, cluster_size=512',
    build: async (p) => {
      await made('16M', 'cluster_size=512', 'write -P 0x11 0 300k', 'write -P 0x12 8M 64k')(p);
      await setRefcount(p, await hostCluster(p, 8 * MiB), 0);
    },
  },
  {
    name: 'refcount 0 on an L2 table',
    build: async (p) => {
      await base(p);
      await setRefcount(p, Number((await readU64(p, await l1(p))) & ~COPIED) / (64 * KiB), 0);
    },
  },
  {
    name: 'a refcount too low on a shared compressed cluster',
    build: async (p) => {
      await made('64M', '', 'write -c -P 0x11 0 64k', 'write -c -P 0x12 64k 64k')(p);
      // A compressed entry of 64k clusters: the host offset in bits 0..53; both clusters share one host cluster.
      const host = (await readU64(p, await l2EntryAt(p, 0))) & ((1n << 54n) - 1n);
      await setRefcount(p, Number(host >> 16n), 1);
    },
  },
  { name: 'an L2 entry without COPIED', build: patched(l2(0), (e) => e & ~COPIED) },
  { name: 'an L1 entry without COPIED', build: patched(l1, (e) => e & ~COPIED) },
  { name: 'COPIED on a compressed cluster', build: patched(l2(2 * MiB), (e) => e | COPIED) },
  { name: 'an L2 entry with reserved bits', build: patched(l2(64 * KiB), (e) => e | 2n) },
  { name: 'an L1 entry with reserved bits', build: patched(l1, (e) => e | 1n) },
  { name: 'an unaligned data cluster', build: patched(l2(64 * KiB), (e) => e + 0x200n), unreadable: true },
  { name: 'an unaligned preallocated zero cluster', build: patched(l2(64 * KiB), (e) => e + 0x201n), unreadable: true },
  { name: 'a data cluster past the end of the file', build: patched(l2(1 * MiB), () => COPIED | 0x10000000n) },
  { name: 'an L2 table past the end of the file', build: patched(l1, () => COPIED | 0x40000000n) },
  { name: 'a refcount block outside the image', build: patched(reftable, () => 0x1000000n) },
  // The repair cannot grow the file so far (ext4 stops at 16 TiB): it rebuilds the refcounts instead.
  { name: 'a refcount block outside the image, 1 PiB out', build: patched(reftable, () => 1n << 50n) },
  // Past 2^53 an offset is no longer exact as a number; its alignment still is.
  { name: 'an unaligned refcount block past 2^63', build: patched(reftable, () => 0xfffffffffffffe00n), unreadable: true },
  { name: 'an unaligned refcount block', build: patched(reftable, (e) => e + 0x200n), unreadable: true },
  { name: 'a refcount table entry with reserved bits', build: patched(reftable, (e) => e | 1n) },
  { name: 'the corrupt bit', build: patched(async () => 72, (e) => e | 2n) },
  {
    name: 'a dirty image (lazy_refcounts=on, qemu-io aborted)',
    build: async (p) => {
      await create(p, '64M', 'lazy_refcounts=on');
      // qemu-io dies of SIGABRT on `abort`, which leaves the dirty bit and unwritten refcounts.
      await io(p, 'write -P 0x33 0 200k', 'write -P 0x44 5M 64k', 'abort').catch(() => undefined);
    },
    fileDiffers: {
      repairs: ['leaks'],
      why:
        '-r leaks fails (the refcounts must be rebuilt), yet QEMU clears the dirty bit when it closes the image, so its next ' +
        'read-write open no longer repairs it; blocklayer leaves the bit set',
    },
  },
];

export const CASES: readonly CheckCase[] = [...clean.map((c) => ({ ...c, name: `clean: ${c.name}` })), ...damaged];
