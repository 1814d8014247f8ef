/* Errors for Node as its fs module makes them: `code` (errno name), negative `errno`, `syscall`. */
#ifndef BLOCKLAYER_ERRNO_ERROR_H
#define BLOCKLAYER_ERRNO_ERROR_H
#include <node_api.h>

napi_value errno_error(napi_env env, int error, const char *syscall);

#endif
