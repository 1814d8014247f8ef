/**
 * A bounded write-back cache of metadata tables (L2 slices, refcount
 * blocks), least recently used first out, like QEMU's Qcow2Cache. It is
 * only touched under the image's metadata lock. A caller that awaits
 * between getting an entry and changing it must get it again: the entry
 * may have been evicted meanwhile.
 */
interface CacheEntry {
  buf: Buffer;
  dirty: boolean;
  used: number;
}

export interface CacheBackend {
  /** Fills `buf` with the table at `offset`. */
  load(offset: number, buf: Buffer): Promise<void>;
  /** Writes a dirty entry that is being evicted, after whatever it depends on. */
  writeBack(offset: number, buf: Buffer): Promise<void>;
}

export class TableCache {
  /** In use order: the first entry is the least recently used. */
  private readonly entries = new Map<number, CacheEntry>();
  private clock = 0;
  private lastClean = 0;
  /** The most recently used entry: using it again changes no order (most lookups in a row hit the same slice). */
  private newest: CacheEntry | undefined;

  constructor(
    readonly capacity: number,
    readonly entrySize: number,
    private readonly backend: CacheBackend,
  ) {}

  /** The table at `offset`, loaded if needed. */
  async get(offset: number): Promise<Buffer> {
    const cached = this.touch(offset);
    if (cached !== undefined) return cached.buf;
    const buf = Buffer.alloc(this.entrySize);
    await this.backend.load(offset, buf);
    // Another caller cannot have loaded it meanwhile (the metadata lock is held), but stay safe.
    const raced = this.touch(offset);
    if (raced !== undefined) return raced.buf;
    await this.insert(offset, buf, false);
    return buf;
  }

  /** The table at `offset` if it is cached (it then counts as used), without waiting. */
  peek(offset: number): Buffer | undefined {
    return this.touch(offset)?.buf;
  }

  /** Caches `buf` as the content of `offset` (a table written or about to be written). */
  async put(offset: number, buf: Buffer, dirty: boolean): Promise<void> {
    this.entries.delete(offset);
    await this.insert(offset, buf, dirty);
  }

  markDirty(offset: number): void {
    const entry = this.entries.get(offset);
    if (entry === undefined) throw new Error(`qcow2 cache: no entry at ${offset}`);
    entry.dirty = true;
  }

  /** Dirty entries, by offset. */
  dirty(): [number, Buffer][] {
    return [...this.entries]
      .filter(([, e]) => e.dirty)
      .map(([offset, e]): [number, Buffer] => [offset, e.buf])
      .sort((a, b) => a[0] - b[0]);
  }

  get hasDirty(): boolean {
    for (const entry of this.entries.values()) if (entry.dirty) return true;
    return false;
  }

  markClean(offset: number): void {
    const entry = this.entries.get(offset);
    if (entry !== undefined) entry.dirty = false;
  }

  /** Forgets every entry inside `[start, end)` (clusters that were freed), dirty or not. */
  dropRange(start: number, end: number): void {
    for (const offset of [...this.entries.keys()]) if (offset >= start && offset < end) this.entries.delete(offset);
  }

  /** Drops clean entries unused since the previous call (QEMU's cache-clean-interval). */
  cleanUnused(): void {
    for (const [offset, entry] of [...this.entries]) {
      if (!entry.dirty && entry.used <= this.lastClean) this.entries.delete(offset);
    }
    this.lastClean = this.clock;
  }

  get size(): number {
    return this.entries.size;
  }

  private touch(offset: number): CacheEntry | undefined {
    const entry = this.entries.get(offset);
    if (entry === undefined) return undefined;
    if (entry !== this.newest) {
      this.entries.delete(offset);
      this.entries.set(offset, entry);
      this.newest = entry;
    }
    entry.used = ++this.clock;
    return entry;
  }

  private async insert(offset: number, buf: Buffer, dirty: boolean): Promise<void> {
    while (this.entries.size >= this.capacity) {
      const [victimOffset, victim] = this.entries.entries().next().value as [number, CacheEntry];
      if (victim.dirty) {
        await this.backend.writeBack(victimOffset, victim.buf);
        victim.dirty = false;
      }
      if (this.entries.get(victimOffset) === victim) this.entries.delete(victimOffset);
    }
    this.newest = { buf, dirty, used: ++this.clock };
    this.entries.set(offset, this.newest);
  }
}
