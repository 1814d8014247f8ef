/** Plugin: the null-co driver. */
import { driverPlugin } from '../../core/plugin/driver-plugin.js';
import { nullDriver } from './driver.js';

export default driverPlugin(nullDriver, { version: '0.1.0' });
