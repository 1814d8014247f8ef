/* The file driver's image locks (image_lock.c). */
#ifndef BLOCKLAYER_IMAGE_LOCK_H
#define BLOCKLAYER_IMAGE_LOCK_H
#include <node_api.h>

/* Adds lockByte, unlockByte and lockByteHeld to `exports`; false if it could not. */
int image_lock_init(napi_env env, napi_value exports);

#endif
