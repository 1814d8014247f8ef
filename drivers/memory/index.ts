/** Plugin: the memory driver. */
import { driverPlugin } from '../../core/plugin/driver-plugin.js';
import { memoryDriver } from './driver.js';

export default driverPlugin(memoryDriver, { version: '0.1.0' });
