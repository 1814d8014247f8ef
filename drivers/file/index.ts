/** Plugin: the file driver. */
import { driverPlugin } from '../../core/plugin/driver-plugin.js';
import { fileDriver } from './driver.js';

export default driverPlugin(fileDriver, { version: '0.1.0' });
