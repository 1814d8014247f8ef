import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test, { type ExecutionContext } from 'ava';
import { BlockLayer } from '../../../core/block-layer.js';
import type { PluginManifest } from '../../../core/plugin/plugin-manifest.js';
import { fixturePlugin } from '../../fixtures/plugins/fixture-plugin.js';
import { tempDir } from '../../helpers/temp-dir.js';

const fixtures = fileURLToPath(new URL('../../fixtures/', import.meta.url));
const root = fileURLToPath(new URL('../../../', import.meta.url));

async function manifestFile(t: ExecutionContext, content: string): Promise<string> {
  const dir = await tempDir(t, 'blocklayer-manifest-');
  const path = join(dir, 'plugin-manifest.json');
  await writeFile(path, content);
  return path;
}

const withPlugins = (plugins: PluginManifest['plugins']) => BlockLayer.create({ manifest: { plugins }, baseDir: fixtures });

test('a third-party driver outside drivers/ registers through a manifest path, with its options', async (t) => {
  const layer = await BlockLayer.create({ manifest: join(fixtures, 'manifests/third-party.json') });
  t.deepEqual(
    layer.plugins.map((p) => `${p.name}@${p.version}`),
    ['memory@0.1.0', 'qmp-block-commands@0.1.0', 'x-pattern@1.2.3'],
  );
  t.is(layer.drivers.owner('x-pattern'), 'x-pattern');
  await layer.execute('blockdev-add', { driver: 'x-pattern', 'node-name': 'p', size: 4096 });
  const buf = Buffer.alloc(4);
  await layer.graph.node('p')!.read(250, buf);
  t.deepEqual([...buf], [1, 2, 3, 4], 'byte i is (i + seed 7) mod 256');
  await layer.close();
});

test('manifest errors name the manifest and the problem', async (t) => {
  const cases: [string, RegExp][] = [
    ['{ "plugins": [ ', /^Invalid plugin manifest .*plugin-manifest\.json: .*JSON/],
    ['{ "plugins": [ { "name": "x" } ] }', /^Invalid plugin manifest .*: Parameter 'plugins\[0\]\.module' is missing$/],
    ['{ "plugins": [], "extra": 1 }', /^Invalid plugin manifest .*: Parameter 'extra' is unexpected$/],
    [
      '{ "plugins": [ { "name": "a", "module": "./a" }, { "name": "a", "module": "./b" } ] }',
      /^Invalid plugin manifest .*: plugin 'a' is listed twice$/,
    ],
  ];
  for (const [content, message] of cases) {
    await t.throwsAsync(BlockLayer.create({ manifest: await manifestFile(t, content) }), { message }, content);
  }
  await t.throwsAsync(BlockLayer.create({ manifest: '/nonexistent/manifest.json' }), {
    message: /^Cannot read plugin manifest \/nonexistent\/manifest\.json: /,
  });
});

test('plugin load errors name the plugin and the cause', async (t) => {
  const cases: [PluginManifest['plugins'][number], string | RegExp][] = [
    [{ name: 'gone', module: './plugins/does-not-exist' }, /^Plugin 'gone' \(\.\/plugins\/does-not-exist\): module not found: /],
    [{ name: 'nd', module: './plugins/no-default-export.ts' }, "Plugin 'nd' (./plugins/no-default-export.ts): the module has no default export"],
    [
      { name: 'np', module: './plugins/not-a-plugin' },
      "Plugin 'np' (./plugins/not-a-plugin): the default export is not a plugin ({ name, version, apiVersion, module })",
    ],
    [{ name: 'boom', module: './plugins/throws-on-import' }, /^Plugin 'boom' \(\.\/plugins\/throws-on-import\): cannot load .*: this plugin is broken$/],
    [
      { name: 'future-api', module: './plugins/future-api' },
      "Plugin 'future-api' (./plugins/future-api): written for plugin API 2.0.0, but this blocklayer provides 1.0.0",
    ],
    [{ name: 'other-name', module: './plugins/future-api' }, "Plugin 'other-name' (./plugins/future-api): the module's plugin is named 'future-api'"],
    [{ name: 'no-such-package', module: 'blocklayer-no-such-package' }, /^Plugin 'no-such-package' \(blocklayer-no-such-package\): cannot load /],
  ];
  for (const [entry, message] of cases) {
    await t.throwsAsync(withPlugins([entry]), { message }, entry.name);
  }
});

test('two plugins contributing the same driver is an error naming both', async (t) => {
  await t.throwsAsync(
    withPlugins([
      { name: 'raw', module: join(root, 'drivers/raw') },
      { name: 'second-raw', module: './plugins/second-raw' },
    ]),
    { message: "Plugin 'second-raw' (./plugins/second-raw): Plugin 'second-raw' contributes driver 'raw', which plugin 'raw' already contributes" },
  );
});

test('duplicate commands, transaction actions and job types are errors naming both plugins', async (t) => {
  const cases = [
    [{ command: 'x-fixture' }, "command 'x-fixture'"],
    [{ command: 'query-version' }, "command 'query-version'"],
    [{ action: 'x-fixture-action' }, "transaction action 'x-fixture-action'"],
    [{ jobType: 'backup' as const }, "job type 'backup'"],
  ] as const;
  for (const [contributes, what] of cases) {
    const first = fixturePlugin('first', contributes);
    const second = fixturePlugin('second', contributes);
    const owner = 'command' in contributes && contributes.command === 'query-version' ? 'core' : 'first';
    const plugins = owner === 'core' ? [second] : [first, second];
    await t.throwsAsync(BlockLayer.create({ plugins }), {
      message: `Plugin 'second' (inline): Plugin 'second' contributes ${what}, which plugin '${owner}' already contributes`,
    });
  }
});

test('plugin options are checked against the plugin schema', async (t) => {
  await t.throwsAsync(
    withPlugins([{ name: 'x-pattern', module: './pattern-driver', options: { seed: 300 } }]),
    { message: "Plugin 'x-pattern' (./pattern-driver): Parameter 'options.seed' expects uint8_t" },
  );
  await t.throwsAsync(
    withPlugins([{ name: 'x-pattern', module: './pattern-driver', options: { colour: 'red' } }]),
    { message: "Plugin 'x-pattern' (./pattern-driver): Parameter 'options.colour' is unexpected" },
  );
  await t.throwsAsync(BlockLayer.create({ plugins: [{ plugin: fixturePlugin('plain', {}), options: { a: 1 } }] }), {
    message: "Plugin 'plain' (inline): takes no options",
  });
});

test('disabled plugins are not loaded', async (t) => {
  const layer = await withPlugins([{ name: 'gone', module: './plugins/does-not-exist', enabled: false }]);
  t.deepEqual(layer.plugins, []);
});

test('the default manifest loads the built-in drivers and commands', async (t) => {
  const layer = await BlockLayer.create();
  t.deepEqual(
    layer.drivers.list().map((d) => d.name).sort(),
    ['file', 'memory', 'nbd', 'null-co', 'qcow2', 'quorum', 'raw'],
  );
  t.true(layer.commands.list().some((c) => c.name === 'blockdev-add'));
  await layer.close();
});
