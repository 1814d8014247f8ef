/** Plugin: the qcow2 driver. */
import { driverPlugin } from '../../core/plugin/driver-plugin.js';
import { qcow2Driver } from './driver.js';

export default driverPlugin(qcow2Driver, { version: '0.1.0' });
