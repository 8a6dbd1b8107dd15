/*
 * READ replies of large files without copying the data through the process: on a thread of
 * this addon's own, write the reply's head, sendfile(2) the byte range from the file straight
 * into the socket, then write the XDR padding. The event loop's thread does none of it. The
 * threads are not libuv's pool: a send holds its thread for as long as its client takes to read,
 * and the pool's four threads are the file system calls' (its size is fixed before our code runs).
 *
 * Why native: Node has no sendfile for sockets, and a 1 MiB READ otherwise costs two copies
 * (page cache -> Buffer on a pool thread, Buffer -> socket on the event loop's thread); the
 * second one saturated the single event loop at ~2 GB/s while nfs-ganesha spread its copies over
 * every core.
 *
 * The socket stays Node's: start() dup()s its descriptor, so a socket Node closes meanwhile
 * cannot be reused under us as another descriptor; the caller makes sure Node writes nothing to
 * it until the callback has run. abort() shuts the duplicate down (a stopping server, a
 * connection dropped while a send waits for a client that stopped reading); the duplicate is
 * closed only in the completion callback, on the event loop's thread, so abort() never touches a
 * number reused by another descriptor.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <pthread.h>
#include <unistd.h>
#include <node_api.h>

/* Sends at once. A send waits for its client to read the reply, so this is how many clients'
 * large READs can be in the air together; an idle thread costs a 128 KiB stack. The caller
 * copies READs beyond this many instead of queueing them behind slow readers. */
#define THREADS 64

typedef struct Job {
  struct Job *next;
  /* The way back to the event loop of the thread (main or worker_threads) that started it. */
  napi_threadsafe_function done;
  napi_ref callback;
  napi_ref head_ref;
  napi_ref tail_ref;
  int sock;
  int file;
  off_t position;
  size_t length;
  const char *head;
  size_t head_len;
  const char *tail;
  size_t tail_len;
  int timeout_ms;
  /* Results: 0 or an errno; bytes of head + data + tail that reached the socket. */
  int error;
  double sent;
} Job;

/* 0 when the socket can take more, else an errno (ETIMEDOUT when the client read nothing for timeout_ms). */
static int wait_writable(int fd, int timeout_ms) {
  struct pollfd p = {fd, POLLOUT, 0};
  for (;;) {
    int r = poll(&p, 1, timeout_ms);
    if (r > 0) {
      if (p.revents & POLLOUT) return 0;
      return EPIPE; /* POLLERR/POLLHUP/POLLNVAL without POLLOUT: the connection is gone */
    }
    if (r == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

static int send_all(Job *j, const char *buf, size_t len, int more) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = send(j->sock, buf + off, len - off, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
    if (n > 0) {
      off += (size_t)n;
      j->sent += (double)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int e = wait_writable(j->sock, j->timeout_ms);
      if (e != 0) return e;
    } else {
      return n < 0 ? errno : EPIPE;
    }
  }
  return 0;
}

static void execute(Job *j) {
  int e = send_all(j, j->head, j->head_len, 1);
  off_t pos = j->position;
  size_t left = j->length;
  while (e == 0 && left > 0) {
    ssize_t n = sendfile(j->sock, j->file, &pos, left);
    if (n > 0) {
      left -= (size_t)n;
      j->sent += (double)n;
    } else if (n == 0) {
      e = ENODATA; /* the file ends sooner than the reply said: it shrank meanwhile */
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      e = wait_writable(j->sock, j->timeout_ms);
    } else {
      e = errno;
    }
  }
  if (e == 0 && j->tail_len > 0) e = send_all(j, j->tail, j->tail_len, 0);
  j->error = e;
}

/* On the event loop's thread: the job's result to its callback. */
static void deliver(napi_env env, napi_value unused_cb, void *context, void *data) {
  Job *j = (Job *)data;
  close(j->sock);
  if (env != NULL) {
    napi_value cb, global, argv[2];
    napi_get_reference_value(env, j->callback, &cb);
    napi_get_global(env, &global);
    napi_create_int32(env, j->error, &argv[0]);
    napi_create_double(env, j->sent, &argv[1]);
    napi_delete_reference(env, j->callback);
    napi_delete_reference(env, j->head_ref);
    if (j->tail_ref != NULL) napi_delete_reference(env, j->tail_ref);
    napi_call_function(env, global, cb, 2, argv, NULL);
  }
  free(j);
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready = PTHREAD_COND_INITIALIZER;
static Job *queue_head, *queue_tail;
static int threads_started;

static void *worker(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&lock);
    while (queue_head == NULL) pthread_cond_wait(&ready, &lock);
    Job *j = queue_head;
    queue_head = j->next;
    if (queue_head == NULL) queue_tail = NULL;
    pthread_mutex_unlock(&lock);
    execute(j);
    napi_call_threadsafe_function(j->done, j, napi_tsfn_blocking);
  }
  return NULL;
}

/* The threads, shared by every Node environment of the process; made on the first send. Under the lock. */
static int start_threads(void) {
  if (threads_started) return 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int e = pthread_create(&t, &attr, worker, NULL);
    pthread_attr_destroy(&attr);
    if (e != 0) return e;
    threads_started++;
  }
  return 0;
}

static void free_env_data(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* This environment's way back from the threads, made on its first send; NULL on failure. */
static napi_threadsafe_function env_done(napi_env env) {
  napi_threadsafe_function *fn = NULL;
  napi_get_instance_data(env, (void **)&fn);
  if (fn != NULL) return *fn;
  fn = malloc(sizeof *fn);
  if (fn == NULL) return NULL;
  napi_value name;
  napi_create_string_utf8(env, "clusternfs:sendrange", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, deliver, fn) != napi_ok) {
    free(fn);
    return NULL;
  }
  /* The server's sockets keep the process alive, not a way back that is idle. */
  napi_unref_threadsafe_function(env, *fn);
  napi_set_instance_data(env, fn, free_env_data, NULL);
  return *fn;
}

static napi_value throw_errno(napi_env env, const char *what, int e) {
  char msg[128];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

/* start(socketFd, fileFd, position, length, head, tail|null, timeoutMs, callback(errno, sent)) -> duplicate fd */
static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 8) {
    napi_throw_type_error(env, NULL, "start takes 8 arguments");
    return NULL;
  }
  int32_t sock, file, timeout_ms;
  double position, length;
  if (napi_get_value_int32(env, argv[0], &sock) != napi_ok || napi_get_value_int32(env, argv[1], &file) != napi_ok ||
      napi_get_value_double(env, argv[2], &position) != napi_ok || napi_get_value_double(env, argv[3], &length) != napi_ok ||
      napi_get_value_int32(env, argv[6], &timeout_ms) != napi_ok || position < 0 || length < 0) {
    napi_throw_type_error(env, NULL, "bad descriptor, position, length or timeout");
    return NULL;
  }
  bool is_buf;
  napi_is_buffer(env, argv[4], &is_buf);
  if (!is_buf) {
    napi_throw_type_error(env, NULL, "head must be a Buffer");
    return NULL;
  }
  napi_valuetype tail_type;
  napi_typeof(env, argv[5], &tail_type);
  if (tail_type != napi_null) {
    napi_is_buffer(env, argv[5], &is_buf);
    if (!is_buf) {
      napi_throw_type_error(env, NULL, "tail must be a Buffer or null");
      return NULL;
    }
  }
  Job *j = calloc(1, sizeof(Job));
  if (j == NULL) return throw_errno(env, "start", ENOMEM);
  void *head, *tail = NULL;
  napi_get_buffer_info(env, argv[4], &head, &j->head_len);
  if (tail_type != napi_null) napi_get_buffer_info(env, argv[5], &tail, &j->tail_len);
  j->head = head;
  j->tail = tail;
  j->file = file;
  j->position = (off_t)position;
  j->length = (size_t)length;
  j->timeout_ms = timeout_ms;
  j->sock = fcntl(sock, F_DUPFD_CLOEXEC, 0);
  if (j->sock < 0) {
    int e = errno;
    free(j);
    return throw_errno(env, "dup", e);
  }
  j->done = env_done(env);
  pthread_mutex_lock(&lock);
  int e = j->done == NULL ? EAGAIN : start_threads();
  if (e != 0) {
    pthread_mutex_unlock(&lock);
    close(j->sock);
    free(j);
    return throw_errno(env, "threads", e);
  }
  napi_create_reference(env, argv[7], 1, &j->callback);
  napi_create_reference(env, argv[4], 1, &j->head_ref);
  if (tail_type != napi_null) napi_create_reference(env, argv[5], 1, &j->tail_ref);
  if (queue_tail != NULL) queue_tail->next = j;
  else queue_head = j;
  queue_tail = j;
  pthread_cond_signal(&ready);
  pthread_mutex_unlock(&lock);
  napi_value dupfd;
  napi_create_int32(env, j->sock, &dupfd);
  return dupfd;
}

/* abort(duplicateFd): wakes a send waiting on a client that stopped reading; it then fails. */
static napi_value abort_send(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "abort takes a descriptor");
    return NULL;
  }
  shutdown(fd, SHUT_RDWR);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value f;
  napi_create_int32(env, THREADS, &f);
  napi_set_named_property(env, exports, "threads", f);
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, start, NULL, &f);
  napi_set_named_property(env, exports, "start", f);
  napi_create_function(env, "abort", NAPI_AUTO_LENGTH, abort_send, NULL, &f);
  napi_set_named_property(env, exports, "abort", f);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
