/** Plugin: the nbd driver. */
import { driverPlugin } from '../../core/plugin/driver-plugin.js';
import { nbdDriver } from './driver.js';

export default driverPlugin(nbdDriver, { version: '0.1.0' });
