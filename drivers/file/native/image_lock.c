/*
 * Image locking as QEMU's file-posix does it: open file description (OFD)
 * read locks on single bytes of the image file, one byte per permission
 * a user takes and one per permission it does not share. They are
 * fcntl(F_OFD_SETLK) calls, which never block, so they run on the JS
 * thread: lockByte / unlockByte, and lockByteHeld, which asks whether
 * another open description (another process, or another open of the file
 * here) holds a lock on a byte. Failures throw errno errors.
 */
#define _GNU_SOURCE
#include "image_lock.h"
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include "errno_error.h"

/* (fd, byte): the two arguments every call takes. */
static int read_args(napi_env env, napi_callback_info info, int *fd, off_t *byte) {
  napi_value argv[2];
  size_t argc = 2;
  int64_t fd_value, byte_value;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int64(env, argv[0], &fd_value) != napi_ok || fd_value < 0 || fd_value > INT32_MAX ||
      napi_get_value_int64(env, argv[1], &byte_value) != napi_ok || byte_value < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected (fd, byte)");
    return 0;
  }
  *fd = (int)fd_value;
  *byte = (off_t)byte_value;
  return 1;
}

/* fcntl `command` on a one-byte range of type `type`; 0 with an exception pending if it failed. */
static int one_byte_fcntl(napi_env env, napi_callback_info info, int command, short type, struct flock *lock) {
  int fd;
  off_t byte;
  if (!read_args(env, info, &fd, &byte)) return 0;
  memset(lock, 0, sizeof *lock);
  lock->l_type = type;
  lock->l_whence = SEEK_SET;
  lock->l_start = byte;
  lock->l_len = 1;
  if (fcntl(fd, command, lock) == -1) {
    napi_throw(env, errno_error(env, errno, "fcntl"));
    return 0;
  }
  return 1;
}

static napi_value lock_byte(napi_env env, napi_callback_info info) {
  struct flock lock;
  one_byte_fcntl(env, info, F_OFD_SETLK, F_RDLCK, &lock);
  return NULL;
}

static napi_value unlock_byte(napi_env env, napi_callback_info info) {
  struct flock lock;
  one_byte_fcntl(env, info, F_OFD_SETLK, F_UNLCK, &lock);
  return NULL;
}

/* Whether a write lock on the byte would conflict: someone else holds a (read) lock on it. */
static napi_value lock_byte_held(napi_env env, napi_callback_info info) {
  struct flock lock;
  napi_value result;
  if (!one_byte_fcntl(env, info, F_OFD_GETLK, F_WRLCK, &lock)) return NULL;
  napi_get_boolean(env, lock.l_type != F_UNLCK, &result);
  return result;
}

int image_lock_init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
    {"lockByte", NULL, lock_byte, NULL, NULL, NULL, napi_enumerable, NULL},
    {"unlockByte", NULL, unlock_byte, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lockByteHeld", NULL, lock_byte_held, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties) == napi_ok;
}
