/*
 * Positional reads and writes for the file driver on a thread pool of the
 * addon's own, made as QEMU's (util/thread-pool.c) is: threads start on
 * demand, up to 64, and leave after 10 s idle, so device-bound requests
 * can all be in flight. A request goes to the thread that went idle last,
 * and while requests follow each other closely, a thread out of work
 * watches the queue briefly before it sleeps, so at queue depth 1 one warm,
 * awake thread does all the work. libuv's pool
 * (Node's fs) has 4 threads, each woken in turn from sleep: 100 000 4 KiB
 * writes at queue depth 1 into a qcow2 took 2.0-2.3 s through it here, and
 * 1.4-1.5 s through this pool (qemu-img bench: 1.6-1.8 s). Completions
 * reach the JS thread through a thread-safe function; the pool keeps the
 * event loop alive only while a request is in flight.
 */
#define _GNU_SOURCE
#include "io_pool.h"
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "errno_error.h"

#define MAX_THREADS 64
#define IDLE_SECONDS 10
/* The longest a thread out of work watches for more before it sleeps (QEMU's poll-max-ns for iothreads). */
#define SPIN_MAX_NS 32768
/* Where the watch starts when it grows from nothing (QEMU's first step of adaptive polling). */
#define SPIN_FIRST_NS 4000

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ volatile("yield")
#else
#define cpu_relax() ((void)0)
#endif

typedef enum { IO_READ, IO_WRITE } io_kind;

typedef struct io_request {
  struct io_request *next;
  io_kind kind;
  int fd;
  char *data;
  size_t length;
  int64_t position;
  int64_t done; /* bytes read or written */
  int error;    /* errno, 0 on success */
  napi_deferred deferred;
  napi_ref buffer; /* keeps the caller's buffer alive while a thread uses it */
} io_request;

typedef struct worker {
  struct worker *next_idle;
  pthread_cond_t wake;
  int woken;
} worker;

typedef struct {
  pthread_mutex_t lock;
  io_request *head, *tail; /* waiting requests, oldest first */
  worker *idle;            /* idle threads, the last one to go idle first */
  int queued;              /* requests waiting */
  int busy;                /* threads running a request */
  int sleeping;            /* threads on the idle stack */
  int watching;            /* a thread out of work is timing how long until the next request */
  int64_t spin_ns;         /* how long that thread watches the queue before it sleeps */
  int threads;
  int closing;
  napi_threadsafe_function done; /* hands finished requests to the JS thread */
  uint32_t in_flight;            /* JS thread only */
} io_pool;

static void run_request(io_request *req) {
  while (req->done < (int64_t)req->length) {
    char *at = req->data + req->done;
    size_t left = req->length - (size_t)req->done;
    off_t position = (off_t)(req->position + req->done);
    ssize_t n = req->kind == IO_READ ? pread(req->fd, at, left, position) : pwrite(req->fd, at, left, position);
    if (n < 0) {
      if (errno == EINTR) continue;
      req->error = errno;
      return;
    }
    /* A read stops at end of file; a write that makes no progress would loop forever (QEMU: EINVAL). */
    if (n == 0) {
      if (req->kind == IO_WRITE) req->error = EINVAL;
      return;
    }
    req->done += n;
    /* Reads return what one pread gives, as fs.read does; writes go on until all is written. */
    if (req->kind == IO_READ) return;
  }
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/*
 * With the lock held, and given back held: watches the queue for spin_ns
 * without the lock. At queue depth 1 the next request mostly comes within
 * that, and then neither a futex wake for it nor the thread's wake-up,
 * which in a VM means an IPI to a halted CPU, is paid.
 */
static void spin_for_work(io_pool *pool) {
  pthread_mutex_unlock(&pool->lock);
  int64_t until = now_ns() + pool->spin_ns;
  for (int i = 0; __atomic_load_n(&pool->head, __ATOMIC_ACQUIRE) == NULL; i++) {
    cpu_relax();
    if ((i & 63) == 0 && now_ns() >= until) break;
  }
  pthread_mutex_lock(&pool->lock);
}

/*
 * With the lock held: the watch adapts to how long the watching thread
 * waited for its next request, as QEMU's adaptive polling does. A wait
 * the watch covered keeps it; a longer one within SPIN_MAX_NS doubles it;
 * a longer one still stops watching until waits are short again, so a
 * pool with sparse requests spends no CPU on it.
 */
static void adapt_spin(io_pool *pool, int64_t waited_ns) {
  if (waited_ns <= pool->spin_ns) return;
  if (waited_ns > SPIN_MAX_NS) pool->spin_ns = 0;
  else pool->spin_ns = pool->spin_ns == 0 ? SPIN_FIRST_NS : pool->spin_ns * 2 > SPIN_MAX_NS ? SPIN_MAX_NS : pool->spin_ns * 2;
}

static void free_pool(io_pool *pool) {
  pthread_mutex_destroy(&pool->lock);
  free(pool);
}

/* Removes `self` from the idle stack if it is there. */
static void leave_idle(io_pool *pool, worker *self) {
  for (worker **link = &pool->idle; *link != NULL; link = &(*link)->next_idle) {
    if (*link == self) {
      *link = self->next_idle;
      pool->sleeping--;
      return;
    }
  }
}

static int dispatch(io_pool *pool, int awake_enough);

static void *worker_main(void *arg) {
  io_pool *pool = arg;
  worker self = {.next_idle = NULL, .woken = 0};
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&self.wake, &attr);
  pthread_condattr_destroy(&attr);

  int64_t idle_since = -1; /* when this thread, the pool's watcher, ran out of work */
  pthread_mutex_lock(&pool->lock);
  for (;;) {
    io_request *req = pool->head;
    /* One watcher is enough to take the next request; more would only take CPU from the JS thread. */
    if (req == NULL && !pool->closing && !pool->watching) {
      pool->watching = 1;
      idle_since = now_ns();
      if (pool->spin_ns > 0) spin_for_work(pool);
      req = pool->head;
    }
    if (req != NULL) {
      if (idle_since >= 0) {
        adapt_spin(pool, now_ns() - idle_since);
        pool->watching = 0;
        idle_since = -1;
      }
      __atomic_store_n(&pool->head, req->next, __ATOMIC_RELEASE);
      if (pool->head == NULL) pool->tail = NULL;
      pool->queued--;
      pool->busy++;
      if (pool->queued > 0) dispatch(pool, pool->queued);
      pthread_mutex_unlock(&pool->lock);
      run_request(req);
      /* Under the lock: once close_pool has run, the thread-safe function may be gone. */
      pthread_mutex_lock(&pool->lock);
      pool->busy--;
      if (pool->closing || napi_call_threadsafe_function(pool->done, req, napi_tsfn_nonblocking) != napi_ok) free(req);
      continue;
    }
    if (pool->closing) break;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += IDLE_SECONDS;
    self.woken = 0;
    self.next_idle = pool->idle;
    pool->idle = &self;
    pool->sleeping++;
    int rc = 0;
    while (!self.woken && !pool->closing && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&self.wake, &pool->lock, &deadline);
    if (!self.woken) {
      leave_idle(pool, &self);
      if (rc == ETIMEDOUT && pool->head == NULL) break;
    }
  }
  if (idle_since >= 0) {
    pool->spin_ns = 0;
    pool->watching = 0;
  }
  int last = --pool->threads == 0 && pool->closing;
  pthread_mutex_unlock(&pool->lock);
  pthread_cond_destroy(&self.wake);
  if (last) free_pool(pool);
  return NULL;
}

/*
 * With the lock held, requests waiting. If at least `awake_enough` threads
 * are awake between requests (watching the queue, or about to look at it),
 * they take them; else the thread that went idle last is woken, or else
 * one is started, room permitting (else a busy thread takes them when
 * done). The JS thread asks for one awake thread, and each thread that
 * takes a request asks for as many as still wait, so the wake-ups of a
 * burst are made by the pool's threads, one after another, rather than
 * all by the JS thread, which a futex wake can cost its CPU.
 */
static int dispatch(io_pool *pool, int awake_enough) {
  if (pool->threads - pool->busy - pool->sleeping >= awake_enough) return 0;
  worker *w = pool->idle;
  if (w != NULL) {
    pool->idle = w->next_idle;
    pool->sleeping--;
    w->woken = 1;
    pthread_cond_signal(&w->wake);
    return 0;
  }
  if (pool->threads >= MAX_THREADS) return 0;
  pthread_t thread;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&thread, &attr, worker_main, pool);
  pthread_attr_destroy(&attr);
  if (rc == 0) pool->threads++;
  /* Without any thread the request would wait forever. */
  return rc != 0 && pool->threads == 0 ? rc : 0;
}

/* On the JS thread: settle the request's promise. `env` is NULL when the pool is being torn down. */
static void settle(napi_env env, napi_value callback, void *context, void *data) {
  (void)callback;
  io_pool *pool = context;
  io_request *req = data;
  if (env != NULL) {
    napi_value value;
    if (req->error != 0) {
      napi_reject_deferred(env, req->deferred, errno_error(env, req->error, req->kind == IO_READ ? "read" : "write"));
    } else {
      if (req->kind == IO_READ) napi_create_int64(env, req->done, &value);
      else napi_get_undefined(env, &value);
      napi_resolve_deferred(env, req->deferred, value);
    }
    napi_delete_reference(env, req->buffer);
    if (--pool->in_flight == 0) napi_unref_threadsafe_function(env, pool->done);
  }
  free(req);
}

/* pread(fd, buffer, position): a Promise of the bytes read (one pread); pwrite(fd, buffer, position): of all of it written. */
static napi_value submit(napi_env env, napi_callback_info info, io_kind kind) {
  io_pool *pool;
  napi_value argv[3], promise;
  size_t argc = 3;
  int64_t fd, position;
  void *data;
  size_t length;
  if (napi_get_instance_data(env, (void **)&pool) != napi_ok || pool == NULL) return NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int64(env, argv[0], &fd) != napi_ok || fd < 0 || fd > INT32_MAX ||
      napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok ||
      napi_get_value_int64(env, argv[2], &position) != napi_ok || position < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected (fd, buffer, position)");
    return NULL;
  }
  io_request *req = calloc(1, sizeof *req);
  if (req == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  *req = (io_request){.kind = kind, .fd = (int)fd, .data = data, .length = length, .position = position};
  if (napi_create_reference(env, argv[1], 1, &req->buffer) != napi_ok) {
    free(req);
    return NULL;
  }
  napi_create_promise(env, &req->deferred, &promise);
  if (pool->in_flight++ == 0) napi_ref_threadsafe_function(env, pool->done);

  pthread_mutex_lock(&pool->lock);
  if (pool->tail != NULL) pool->tail->next = req;
  else __atomic_store_n(&pool->head, req, __ATOMIC_RELEASE);
  pool->tail = req;
  pool->queued++;
  int failed = dispatch(pool, 1);
  if (failed) {
    pool->head = pool->tail = NULL;
    pool->queued = 0;
  }
  pthread_mutex_unlock(&pool->lock);
  if (failed) {
    req->error = failed;
    settle(env, NULL, pool, req);
  }
  return promise;
}

static napi_value io_pread(napi_env env, napi_callback_info info) { return submit(env, info, IO_READ); }
static napi_value io_pwrite(napi_env env, napi_callback_info info) { return submit(env, info, IO_WRITE); }

/*
 * The environment is going away: idle threads leave, busy ones after their
 * request, which is dropped; the last one frees the pool. Registered after
 * the thread-safe function, so it runs before that is destroyed.
 */
static void close_pool(void *data) {
  io_pool *pool = data;
  pthread_mutex_lock(&pool->lock);
  pool->closing = 1;
  for (worker *w = pool->idle; w != NULL; w = w->next_idle) pthread_cond_signal(&w->wake);
  pool->idle = NULL;
  pool->sleeping = 0;
  int none = pool->threads == 0;
  pthread_mutex_unlock(&pool->lock);
  if (none) free_pool(pool);
}

int io_pool_init(napi_env env, napi_value exports) {
  io_pool *pool = calloc(1, sizeof *pool);
  napi_value name;
  if (pool == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return 0;
  }
  pthread_mutex_init(&pool->lock, NULL);
  napi_create_string_utf8(env, "blocklayer file I/O", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, pool, settle, &pool->done) != napi_ok ||
      napi_unref_threadsafe_function(env, pool->done) != napi_ok ||
      napi_set_instance_data(env, pool, NULL, NULL) != napi_ok || napi_add_env_cleanup_hook(env, close_pool, pool) != napi_ok) {
    free_pool(pool);
    return 0;
  }
  napi_property_descriptor properties[] = {
    {"pread", NULL, io_pread, NULL, NULL, NULL, napi_enumerable, NULL},
    {"pwrite", NULL, io_pwrite, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, 2, properties) == napi_ok;
}
