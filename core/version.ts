/** Versions this build reports. */
import pkg from '../package.json' with { type: 'json' };
import type { QmpVersion } from './qmp/qmp-session.js';

export const BLOCKLAYER_VERSION: string = pkg.version;

/** The plugin API version; plugins declare the version (or semver range) they were written for. */
export const PLUGIN_API_VERSION = '1.0.0';

/** The QMP level we speak: QEMU 7.2's commands, arguments, messages and events. */
export const QMP_VERSION: QmpVersion = {
  qemu: { micro: 0, minor: 2, major: 7 },
  package: `blocklayer ${BLOCKLAYER_VERSION}`,
};
