/** Arguments of blockdev-create (QEMU's), validated before any job exists. */
import { BLOCKDEV_CREATE_OPTIONS } from '../../core/block/driver-registry.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';

/** BlockdevCreateOptions as the command receives it: `driver`, then that driver's members. */
export interface BlockdevCreateOptionsValue {
  driver: string;
  [member: string]: unknown;
}

export const BlockdevCreateArgs = Qapi.struct('q_obj_blockdev-create-arg', {
  'job-id': Qapi.str({ description: 'the id of the new job (of type `create`)' }),
  options: {
    ...Qapi.ref<BlockdevCreateOptionsValue>(BLOCKDEV_CREATE_OPTIONS),
    description: "`driver`, then that driver's creation options (see the driver's README)",
  },
});

export type BlockdevCreateArgsValue = Static<typeof BlockdevCreateArgs>;
