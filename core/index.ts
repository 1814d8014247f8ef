/** The public API: what an embedding application or a plugin imports. */
export { BlockLayer, type BlockLayerOptions, type InlinePlugin } from './block-layer.js';
export { TOKENS } from './tokens.js';
export { BlockLayerError, BlockIoError, type Errno, type QmpErrorClass, strerror } from './errors.js';
export { PLUGIN_API_VERSION, QMP_VERSION, BLOCKLAYER_VERSION } from './version.js';

export type { Plugin } from './plugin/plugin.js';
export { driverPlugin, type DriverPluginInfo } from './plugin/driver-plugin.js';
export type { PluginEntry, PluginManifest } from './plugin/plugin-manifest.js';
export type { LinkedPluginModules, LoadedPlugin } from './plugin/plugin-loader.js';
export type { Disposable } from './plugin/named-registry.js';

export { BlockNode } from './block/block-node.js';
export type { BlockGraph } from './block/block-graph.js';
export type { BlockBackend } from './block/block-backend.js';
export { reopenRefusal, setReadOnly } from './block/node-reopen.js';
export type { NodeChild, NodeParent, NodeEdge } from './block/node-edge.js';
export {
  defineBlockDriver,
  isPreallocMode,
  type BackingFileChange,
  type BlockDriverDefinition,
  type CheckRepair,
  type ChildSpec,
  type ImageCheckResult,
  type DriverCapabilities,
  type DriverCreateContext,
  type DriverKind,
  type DriverLimits,
  type DriverOpenContext,
  type NodeDescription,
  type PreallocMode,
} from './block/driver.js';
export type { BlockStatusExtent, WriteFlags, WriteRequest, WriteResult, ZeroFlags } from './block/request.js';
export { copyBetween, copyRange, subRange, zeroDestination, type CopyEnd, type CopyRange } from './block/copy-range.js';
export { BlockdevRef, BlockdevRefOrNull, type BlockdevOptionsValue } from './block/blockdev-ref.js';
export type { ImageCreator } from './block/image-creator.js';
export type { BlockDeviceInfo, ImageInfo } from './block/node-info.js';
export type { BitmapStore, CreateBitmapOptions } from './bitmap/bitmap-store.js';
export { defaultBitmapGranularity } from './bitmap/bitmap-store.js';
export { DirtyBitmap, type BitmapBackup, type BitmapCheck, type DirtyArea } from './bitmap/dirty-bitmap.js';
export {
  BlockDirtyBitmap,
  BlockDirtyBitmapOrStr,
  BlockDirtyInfo,
  type BlockDirtyBitmapValue,
  type BlockDirtyBitmapOrStrValue,
  type BlockDirtyInfoValue,
} from './bitmap/bitmap-schema.js';

export type { BlockLayerHooks, BlockLayerEvent, CommandExecution } from './hooks/block-layer-hooks.js';
export type { HookContribution } from './hooks/hook-contribution.js';
export type { ObjectRegistry } from './objects/object-registry.js';
export type { ObjectCreateContext, ObjectTypeContribution } from './objects/object-type-contribution.js';
export { isTlsCreds, type TlsCreds, type TlsSocketOptions, type UserObject } from './objects/user-object.js';
export { clientTlsSocket, serverTlsSocket, TlsHandshakeError, type TlsHandshakeOptions } from './protocols/nbd/tls.js';
export type { JobHandle, JobStatus, JobType } from './job/job-handle.js';
export type { JobTypeContribution } from './job/job-type-contribution.js';
export type {
  PreparedAction,
  TransactionActionContribution,
  TransactionContext,
} from './transaction/transaction-action.js';
export type { QmpCommand, CommandContext, QmpSessionControl } from './qmp/qmp-command.js';
export type { CommandRegistry } from './qmp/command-registry.js';
export { QmpClient, type QmpMessage, type QmpEventMessage } from './qmp/qmp-client.js';
export type { QmpAddress, QmpServer } from './qmp/qmp-server.js';
export type { Lifecycle } from './lifecycle.js';

export { Qapi, type Static } from './schema/qapi.js';
