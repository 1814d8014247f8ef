/* The addon's rejections, shaped as Node's fs errors (errno_error.h). */
#include "errno_error.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>

static const struct {
  int value;
  const char *name;
} errno_names[] = {
  /* ENOTSUP first: on Linux it equals EOPNOTSUPP and is the name Node uses. */
  {ENOTSUP, "ENOTSUP"}, {EOPNOTSUPP, "EOPNOTSUPP"}, {EPERM, "EPERM"},
  {ENOENT, "ENOENT"},   {EINTR, "EINTR"},           {EIO, "EIO"},
  {ENXIO, "ENXIO"},     {EBADF, "EBADF"},           {EAGAIN, "EAGAIN"},
  {ENOMEM, "ENOMEM"},   {EACCES, "EACCES"},         {EBUSY, "EBUSY"},
  {EXDEV, "EXDEV"},     {ENODEV, "ENODEV"},         {EISDIR, "EISDIR"},
  {EINVAL, "EINVAL"},   {EFBIG, "EFBIG"},           {ENOSPC, "ENOSPC"},
  {ESPIPE, "ESPIPE"},   {EROFS, "EROFS"},           {ENOSYS, "ENOSYS"},
  {ENOTTY, "ENOTTY"},   {ETXTBSY, "ETXTBSY"},       {EOVERFLOW, "EOVERFLOW"},
  {EDQUOT, "EDQUOT"},   {EFAULT, "EFAULT"},
};

static const char *errno_name(int value) {
  for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
    if (errno_names[i].value == value) return errno_names[i].name;
  }
  return "EUNKNOWN";
}

napi_value errno_error(napi_env env, int error, const char *syscall) {
  char message[160];
  napi_value code, text, value, errno_value, syscall_value;
  snprintf(message, sizeof message, "%s: %s", syscall, strerror(error));
  napi_create_string_utf8(env, errno_name(error), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &value);
  napi_create_int32(env, -error, &errno_value);
  napi_set_named_property(env, value, "errno", errno_value);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, value, "syscall", syscall_value);
  return value;
}
