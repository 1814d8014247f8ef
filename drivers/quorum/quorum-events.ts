/**
 * QUORUM_REPORT_BAD and QUORUM_FAILURE, with QEMU's members: ranges in
 * 512-byte sectors (rounded outwards), the child by node name, the quorum by
 * its device name if it has one, else its node name.
 */
import { strerror, toBlockIoError } from '../../core/errors.js';

export type QuorumOpType = 'read' | 'write' | 'flush';

export interface QuorumEvents {
  /** A child failed, or (reads, without `error`) returned data that lost the vote. */
  reportBad(type: QuorumOpType, offset: number, bytes: number, nodeName: string, error?: unknown): void;
  /** Too few children succeeded or agreed: the request fails. */
  reportFailure(offset: number, bytes: number): void;
}

type Publish = (event: string, data: Record<string, unknown>) => void;

const SECTOR = 512;

function sectors(offset: number, bytes: number): { 'sector-num': number; 'sectors-count': number } {
  const start = Math.floor(offset / SECTOR);
  return { 'sector-num': start, 'sectors-count': Math.ceil((offset + bytes) / SECTOR) - start };
}

/** `reference` names the quorum at the time of the event (a device may be attached later). */
export function quorumEvents(publish: Publish, reference: () => string): QuorumEvents {
  return {
    reportBad(type, offset, bytes, nodeName, error) {
      const data: Record<string, unknown> = { type, 'node-name': nodeName, ...sectors(offset, bytes) };
      if (error !== undefined) data.error = strerror(toBlockIoError(error).errno);
      publish('QUORUM_REPORT_BAD', data);
    },
    reportFailure(offset, bytes) {
      publish('QUORUM_FAILURE', { reference: reference(), ...sectors(offset, bytes) });
    },
  };
}
