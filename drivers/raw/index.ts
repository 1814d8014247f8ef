/** Plugin: the raw driver. */
import { driverPlugin } from '../../core/plugin/driver-plugin.js';
import { rawDriver } from './driver.js';

export default driverPlugin(rawDriver, { version: '0.1.0' });
