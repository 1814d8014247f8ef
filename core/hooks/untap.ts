/**
 * Removes a tap by name. tapable has no public way to; a hook keeps its taps
 * in `taps` and caches a compiled caller that `_resetCompilation` drops, the
 * same reset `tap` itself does. Jobs use this to stop intercepting a node's
 * writes when they end, so an idle node's hooks are unused again.
 */
import type { Hook } from 'tapable';

interface CompiledHook {
  taps: { name: string }[];
  _resetCompilation(): void;
}

export function untap(hook: Hook<any, any>, name: string): void {
  const compiled = hook as unknown as CompiledHook;
  const index = compiled.taps.findIndex((tap) => tap.name === name);
  if (index < 0) return;
  compiled.taps.splice(index, 1);
  compiled._resetCompilation();
}
