/* The file driver's read/write thread pool (io_pool.c). */
#ifndef BLOCKLAYER_IO_POOL_H
#define BLOCKLAYER_IO_POOL_H
#include <node_api.h>

/* Adds pread and pwrite to `exports`; false (an exception pending) if it could not. */
int io_pool_init(napi_env env, napi_value exports);

#endif
