/** The test kit for plugin authors: `import { createTestLayer } from 'blocklayer/testing'`. */
export { createTestLayer, type TestLayerOptions } from './create-test-layer.js';
export { connectQmp, type QmpTestConnection } from './qmp-test-client.js';
