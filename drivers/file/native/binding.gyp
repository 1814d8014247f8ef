{
  "targets": [
    {
      "target_name": "sparse_ops",
      "sources": ["sparse_ops.c", "io_pool.c", "image_lock.c", "errno_error.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-Werror=implicit-function-declaration"]
    }
  ]
}
