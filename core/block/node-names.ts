/** QEMU's rules for node and device names. */
import { BlockLayerError } from '../errors.js';

/** QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
export function isWellFormedId(id: string): boolean {
  return /^[A-Za-z][A-Za-z0-9_.-]*$/.test(id);
}

const NODE_NAME_MAX = 31;

export function checkNodeName(name: string): void {
  if (!isWellFormedId(name)) throw new BlockLayerError(`Invalid node-name: '${name}'`);
  if (name.length > NODE_NAME_MAX) throw new BlockLayerError('Node name too long');
}

export function checkDeviceName(name: string): void {
  if (!isWellFormedId(name)) throw new BlockLayerError(`Invalid device name: '${name}'`);
}
