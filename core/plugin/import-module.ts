/**
 * How the plugin loader imports a plugin module from disk. It is one
 * function in a module of its own so that the bundled CLI can put its own
 * in its place (scripts/bundle-cli.mjs): code that V8 runs from a code cache
 * cannot call import() in Node 20, so the bundle's launcher does it.
 */
export function importModule(specifier: string): Promise<unknown> {
  return import(specifier);
}
