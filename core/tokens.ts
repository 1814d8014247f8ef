/**
 * Every DI token the core defines, in one place. Symbols, not classes, so
 * nothing depends on emitted type metadata (tsx and tsc behave the same).
 *
 * Contribution tokens are multi-bindings: plugins bind to them and the core
 * collects them with `getAll` (Theia's contribution points).
 */
export const TOKENS = {
  /** BlockDriverDefinition: a driver (drivers/<name>/). */
  BlockDriverContribution: Symbol.for('blocklayer.BlockDriverContribution'),
  /** JobTypeContribution: a job type (backup, mirror …). */
  JobTypeContribution: Symbol.for('blocklayer.JobTypeContribution'),
  /** TransactionActionContribution: an action usable in QMP `transaction`. */
  TransactionActionContribution: Symbol.for('blocklayer.TransactionActionContribution'),
  /** QmpCommand (or a list of them): commands of the QMP and API command registry. */
  CommandContribution: Symbol.for('blocklayer.CommandContribution'),
  /** HookContribution: taps on the global hooks. */
  HookContribution: Symbol.for('blocklayer.HookContribution'),
  /** ObjectTypeContribution: a user-creatable object type (`object-add`, `--object`: tls-creds-psk …). */
  ObjectTypeContribution: Symbol.for('blocklayer.ObjectTypeContribution'),

  /** BlockLayerHooks: the global hooks. */
  BlockLayerHooks: Symbol.for('blocklayer.BlockLayerHooks'),
  /** BlockGraph: nodes, edges, backends. */
  BlockGraph: Symbol.for('blocklayer.BlockGraph'),
  /** DriverRegistry: drivers by name; builds the BlockdevOptions schema. */
  DriverRegistry: Symbol.for('blocklayer.DriverRegistry'),
  /** ImageCreator: creates images through drivers' `create`. */
  ImageCreator: Symbol.for('blocklayer.ImageCreator'),
  /** CommandRegistry: commands by name; validates and runs them. */
  CommandRegistry: Symbol.for('blocklayer.CommandRegistry'),
  /** JobManager: the jobs of the layer. */
  JobManager: Symbol.for('blocklayer.JobManager'),
  /** JobTypeRegistry: job types by name. */
  JobTypeRegistry: Symbol.for('blocklayer.JobTypeRegistry'),
  /** TransactionActionRegistry: transaction actions by QMP type name. */
  TransactionActionRegistry: Symbol.for('blocklayer.TransactionActionRegistry'),
  /** TransactionRunner: runs QMP transactions (and the single-action commands built on them). */
  TransactionRunner: Symbol.for('blocklayer.TransactionRunner'),
  /** QapiValidator: schema validation with QEMU's messages. */
  QapiValidator: Symbol.for('blocklayer.QapiValidator'),
  /** EventPublisher: stamps and publishes QMP events through the `event` hook. */
  EventPublisher: Symbol.for('blocklayer.EventPublisher'),
  /** BitmapStore: the named dirty bitmaps of every node; records their writes. */
  BitmapStore: Symbol.for('blocklayer.BitmapStore'),
  /** ObjectRegistry: user-creatable objects by id (TLS credentials …), and their types. */
  ObjectRegistry: Symbol.for('blocklayer.ObjectRegistry'),
  /** Lifecycle: shutdown requests (the `quit` command) and what runs on close. */
  Lifecycle: Symbol.for('blocklayer.Lifecycle'),
  /** PluginOptions: a plugin's validated manifest options, bound by name (`@named(pluginName)`). */
  PluginOptions: Symbol.for('blocklayer.PluginOptions'),
  /** LoadedPlugins: the plugins of this layer, in load order. */
  LoadedPlugins: Symbol.for('blocklayer.LoadedPlugins'),
} as const;
