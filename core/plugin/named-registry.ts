/**
 * A registry of contributions by name that remembers which plugin gave each
 * one, so that a second plugin contributing the same name is a load error
 * naming both.
 */
import { BlockLayerError } from '../errors.js';

export interface Disposable {
  dispose(): void;
}

export class DuplicateContributionError extends BlockLayerError {
  constructor(what: string, name: string, plugin: string, existingPlugin: string) {
    super(`Plugin '${plugin}' contributes ${what} '${name}', which plugin '${existingPlugin}' already contributes`);
    this.name = 'DuplicateContributionError';
  }
}

export class NamedRegistry<T> {
  private readonly entries = new Map<string, { item: T; plugin: string }>();

  /** @param what how messages name an entry: 'driver', 'command' … */
  constructor(private readonly what: string) {}

  register(name: string, item: T, plugin: string): Disposable {
    const existing = this.entries.get(name);
    if (existing !== undefined) throw new DuplicateContributionError(this.what, name, plugin, existing.plugin);
    this.entries.set(name, { item, plugin });
    return { dispose: () => this.entries.delete(name) };
  }

  get(name: string): T | undefined {
    return this.entries.get(name)?.item;
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** Which plugin contributed `name`. */
  owner(name: string): string | undefined {
    return this.entries.get(name)?.plugin;
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  values(): T[] {
    return [...this.entries.values()].map((e) => e.item);
  }
}
