/** NBD error values ↔ errno names, both directions. */
import test from 'ava';
import {
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
} from '../../../../core/protocols/nbd/constants.js';
import { errnoFromNbd, nbdFromErrno } from '../../../../core/protocols/nbd/errno.js';

test('client side: the spec values, unknown ones as EINVAL', (t) => {
  t.deepEqual(
    [NBD_EPERM, NBD_EIO, NBD_ENOMEM, NBD_EINVAL, NBD_ENOSPC, NBD_EOVERFLOW, NBD_ENOTSUP, NBD_ESHUTDOWN, 42].map(errnoFromNbd),
    ['EPERM', 'EIO', 'ENOMEM', 'EINVAL', 'ENOSPC', 'EOVERFLOW', 'ENOTSUP', 'ESHUTDOWN', 'EINVAL'],
  );
});

test('server side: nbdkit’s mapping; ENOTSUP only answers a fast zero', (t) => {
  t.is(nbdFromErrno('EROFS'), NBD_EPERM);
  t.is(nbdFromErrno('EACCES'), NBD_EPERM);
  t.is(nbdFromErrno('EFBIG'), NBD_ENOSPC);
  t.is(nbdFromErrno('EIO'), NBD_EIO);
  t.is(nbdFromErrno('ESHUTDOWN'), NBD_ESHUTDOWN);
  t.is(nbdFromErrno('ENOTSUP'), NBD_EINVAL);
  t.is(nbdFromErrno('ENOTSUP', true), NBD_ENOTSUP);
  t.is(nbdFromErrno('EBUSY'), NBD_EINVAL);
});
