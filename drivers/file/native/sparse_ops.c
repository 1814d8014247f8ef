/*
 * The few Linux file syscalls Node's fs module does not expose, for the
 * `file` driver: SEEK_DATA/SEEK_HOLE, fallocate modes, copy_file_range,
 * FS_NOCOW_FL. Plain N-API; every call runs on the libuv thread pool and
 * returns a Promise. Rejections are Errors with `code` (errno name),
 * `errno` (negative, as in Node's fs errors) and `syscall`. The module
 * also carries the driver's read/write pool (io_pool.c) and its image
 * locks (image_lock.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "errno_error.h"
#include "image_lock.h"
#include "io_pool.h"

typedef enum {
  OP_SEEK_DATA,
  OP_SEEK_HOLE,
  OP_SEEK_END,
  OP_PUNCH_HOLE,
  OP_ZERO_RANGE,
  OP_ALLOCATE,
  OP_COPY_FILE_RANGE,
  OP_SET_NOCOW,
} op_kind;

typedef struct {
  op_kind kind;
  int fd;
  int fd_out;
  int64_t offset;
  int64_t offset_out;
  int64_t length;
  int64_t result;
  int error; /* errno, 0 on success */
  napi_deferred deferred;
  napi_async_work work;
} request;

static const char *syscall_name(op_kind kind) {
  switch (kind) {
    case OP_SEEK_DATA:
    case OP_SEEK_HOLE:
    case OP_SEEK_END:
      return "lseek";
    case OP_COPY_FILE_RANGE:
      return "copy_file_range";
    case OP_SET_NOCOW:
      return "ioctl";
    default:
      return "fallocate";
  }
}

/* lseek that reports "no data/hole from here to EOF" (ENXIO) as -1. */
static int64_t seek(request *req, int whence) {
  off_t at = lseek(req->fd, (off_t)req->offset, whence);
  if (at >= 0) return at;
  if (errno != ENXIO) req->error = errno;
  return -1;
}

static void do_fallocate(request *req, int mode) {
  int ret;
  do ret = fallocate(req->fd, mode, (off_t)req->offset, (off_t)req->length);
  while (ret < 0 && errno == EINTR);
  if (ret < 0) req->error = errno;
}

/* Only sets the flag; whether the file system honours it is its business. */
static void apply_nocow(request *req) {
  int attr;
  if (ioctl(req->fd, FS_IOC_GETFLAGS, &attr) < 0) {
    req->error = errno;
    return;
  }
  attr |= FS_NOCOW_FL;
  if (ioctl(req->fd, FS_IOC_SETFLAGS, &attr) < 0) req->error = errno;
}

/* Runs on a thread-pool thread: no N-API calls here. */
static void execute(napi_env env, void *data) {
  (void)env;
  request *req = data;
  switch (req->kind) {
    case OP_SEEK_DATA:
      req->result = seek(req, SEEK_DATA);
      break;
    case OP_SEEK_HOLE:
      req->result = seek(req, SEEK_HOLE);
      break;
    case OP_SEEK_END:
      req->offset = 0;
      req->result = seek(req, SEEK_END);
      break;
    case OP_PUNCH_HOLE:
      do_fallocate(req, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
      break;
    case OP_ZERO_RANGE:
      do_fallocate(req, FALLOC_FL_ZERO_RANGE);
      break;
    case OP_ALLOCATE:
      do_fallocate(req, 0);
      break;
    case OP_COPY_FILE_RANGE: {
      loff_t in = req->offset, out = req->offset_out;
      ssize_t copied;
      do copied = copy_file_range(req->fd, &in, req->fd_out, &out, (size_t)req->length, 0);
      while (copied < 0 && errno == EINTR);
      if (copied < 0) req->error = errno;
      else req->result = copied;
      break;
    }
    case OP_SET_NOCOW:
      apply_nocow(req);
      break;
  }
}

/* Back on the JS thread: settle the Promise and free the request. */
static void complete(napi_env env, napi_status status, void *data) {
  request *req = data;
  napi_value value;
  if (status != napi_ok && req->error == 0) req->error = EIO;
  if (req->error != 0) {
    napi_reject_deferred(env, req->deferred, errno_error(env, req->error, syscall_name(req->kind)));
  } else {
    int has_result = req->kind <= OP_SEEK_END || req->kind == OP_COPY_FILE_RANGE;
    if (has_result) napi_create_int64(env, req->result, &value);
    else napi_get_undefined(env, &value);
    napi_resolve_deferred(env, req->deferred, value);
  }
  napi_delete_async_work(env, req->work);
  free(req);
}

/* Which arguments each operation takes, in order. */
typedef enum { ARG_FD, ARG_OFFSET, ARG_FD_OUT, ARG_OFFSET_OUT, ARG_LENGTH } arg_kind;

static int read_args(napi_env env, napi_callback_info info, request *req, const arg_kind *kinds, size_t count) {
  napi_value argv[5];
  size_t argc = 5;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < count) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "missing arguments");
    return 0;
  }
  for (size_t i = 0; i < count; i++) {
    int64_t value;
    if (napi_get_value_int64(env, argv[i], &value) != napi_ok || value < 0) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "arguments must be non-negative numbers");
      return 0;
    }
    switch (kinds[i]) {
      case ARG_FD: req->fd = (int)value; break;
      case ARG_FD_OUT: req->fd_out = (int)value; break;
      case ARG_OFFSET: req->offset = value; break;
      case ARG_OFFSET_OUT: req->offset_out = value; break;
      case ARG_LENGTH: req->length = value; break;
    }
  }
  return 1;
}

static napi_value start(napi_env env, napi_callback_info info, op_kind kind, const arg_kind *kinds, size_t count) {
  napi_value promise, name;
  request *req = calloc(1, sizeof *req);
  if (req == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  req->kind = kind;
  if (!read_args(env, info, req, kinds, count)) {
    free(req);
    return NULL;
  }
  napi_create_promise(env, &req->deferred, &promise);
  napi_create_string_utf8(env, syscall_name(kind), NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, req, &req->work);
  napi_queue_async_work(env, req->work);
  return promise;
}

static const arg_kind fd_only[] = {ARG_FD};
static const arg_kind fd_offset[] = {ARG_FD, ARG_OFFSET};
static const arg_kind fd_range[] = {ARG_FD, ARG_OFFSET, ARG_LENGTH};
static const arg_kind copy_args[] = {ARG_FD, ARG_OFFSET, ARG_FD_OUT, ARG_OFFSET_OUT, ARG_LENGTH};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define EXPORT(fn, kind, args) \
  static napi_value fn(napi_env env, napi_callback_info info) { return start(env, info, kind, args, COUNT(args)); }

EXPORT(seek_data, OP_SEEK_DATA, fd_offset)
EXPORT(seek_hole, OP_SEEK_HOLE, fd_offset)
EXPORT(seek_end, OP_SEEK_END, fd_only)
EXPORT(punch_hole, OP_PUNCH_HOLE, fd_range)
EXPORT(zero_range, OP_ZERO_RANGE, fd_range)
EXPORT(allocate, OP_ALLOCATE, fd_range)
EXPORT(copy_range, OP_COPY_FILE_RANGE, copy_args)
EXPORT(set_nocow, OP_SET_NOCOW, fd_only)

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
    {"seekData", NULL, seek_data, NULL, NULL, NULL, napi_enumerable, NULL},
    {"seekHole", NULL, seek_hole, NULL, NULL, NULL, napi_enumerable, NULL},
    {"seekEnd", NULL, seek_end, NULL, NULL, NULL, napi_enumerable, NULL},
    {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_enumerable, NULL},
    {"zeroRange", NULL, zero_range, NULL, NULL, NULL, napi_enumerable, NULL},
    {"allocate", NULL, allocate, NULL, NULL, NULL, napi_enumerable, NULL},
    {"copyFileRange", NULL, copy_range, NULL, NULL, NULL, napi_enumerable, NULL},
    {"setNoCow", NULL, set_nocow, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, COUNT(properties), properties);
  return io_pool_init(env, exports) && image_lock_init(env, exports) ? exports : NULL;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
