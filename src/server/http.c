/* http.c - libmicrohttpd, thread per connection: routes, bodies, JSON and SSE answers, metrics.
 * Handlers may block (the manual's "flow control": safe only with a thread per connection): a completion waits
 * on its job's condition variable, polling its socket so a client that hangs up cancels the generation. */
#include <arpa/inet.h>
#include <limits.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/srv_state.h"

static const int codes[SRV_N_CODES - 1] = {200, 400, 404, 405, 413, 500, 503};

void srv_observe(srv_hist *h, double t) {
  int b = 0;
  while (b < SRV_N_BUCKETS && t > h->bounds[b]) b++;
  h->bucket[b]++, h->sum += t;
}

void srv_count(srv_rate *r, double now, double n) {
  int64_t sec = (int64_t)now;
  int k = (int)(sec % SRV_RATE_SECS);
  if (r->sec[k] != sec) r->sec[k] = sec, r->n[k] = 0;
  r->n[k] += n;
}

/* Per second over the last SRV_RATE_SECS seconds (fewer right after the start). */
double srv_rate_per_s(const srv_rate *r, double now, double uptime) {
  int64_t sec = (int64_t)now;
  double sum = 0;
  for (int k = 0; k < SRV_RATE_SECS; k++)
    if (r->sec[k] > sec - SRV_RATE_SECS && r->sec[k] <= sec) sum += r->n[k];
  double span = uptime < SRV_RATE_SECS ? uptime : SRV_RATE_SECS;
  return span > 0 ? sum / span : 0;
}

void srv_log(const qvl_server *s, const char *rid, const char *fmt, ...) {
  if (!s->p.log) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(s->p.log, "qvl serve: %s %s\n", rid, line); /* one call: lines of concurrent requests do not mix */
  fflush(s->p.log);
}

/* Per connection: the body as it arrives, the request id, and what its log line says. */
typedef struct conn {
  char rid[48];
  const char *method, *url; /* MHD's, valid for the request */
  double t0;
  char note[768]; /* the log line's tail: tokens and finish, or the error */
  char *body;
  size_t len, cap;
  int too_big, answered;
} conn;

/* A streamed answer: the job and the SSE bytes not yet handed to MHD. */
typedef struct stream {
  qvl_server *s;
  job *j;
  char rid[48];
  double t0;
  int fd, phase; /* 0 role chunk, 1 content, 2 the end, 3 done */
  size_t rd;     /* job text already sent */
  char *out;
  size_t out_len, out_off, out_cap;
  long created;
} stream;

static void count_status(qvl_server *s, int status) {
  int k = 0;
  while (k < SRV_N_CODES - 1 && codes[k] != status) k++;
  pthread_mutex_lock(&s->mu);
  s->m.by_code[k]++;
  pthread_mutex_unlock(&s->mu);
}

static enum MHD_Result send_buf(qvl_server *s, struct MHD_Connection *c, conn *cn, int status, const char *ctype,
                                const char *body, size_t len) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", ctype);
  MHD_add_response_header(r, "x-request-id", cn->rid);
  if (status == 405) MHD_add_response_header(r, "Allow", "GET, POST");
  enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
  MHD_destroy_response(r);
  cn->answered = 1;
  count_status(s, status);
  srv_log(s, cn->rid, "%s %s %d %.3fs%s%s", cn->method, cn->url, status, srv_now() - cn->t0, cn->note[0] ? " " : "",
          cn->note);
  return ok;
}

static enum MHD_Result send_json(qvl_server *s, struct MHD_Connection *c, conn *cn, int status, cJSON *o) {
  char *txt = o ? cJSON_PrintUnformatted(o) : NULL;
  cJSON_Delete(o);
  if (!txt) return MHD_NO;
  enum MHD_Result ok = send_buf(s, c, cn, status, "application/json", txt, strlen(txt));
  free(txt);
  return ok;
}

static enum MHD_Result send_error(qvl_server *s, struct MHD_Connection *c, conn *cn, const srv_error *e) {
  snprintf(cn->note, sizeof cn->note, "error %.40s%s%.96s: %.500s", e->code ? e->code : e->type, e->param[0] ? " at " : "",
           e->param, e->message);
  return send_json(s, c, cn, e->status, srv_error_json(e, cn->rid));
}

/* The log line's tail for a job that ran: its tokens, images and how it ended. Under s->mu. */
static void job_note(char *note, size_t cap, const job *j) {
  snprintf(note, cap, "prompt=%d gen=%d images=%d finish=%s", j->n_prompt, j->n_gen, j->n_images,
           j->err.status ? "error" : j->cancel ? "cancelled" : j->finish ? j->finish : "length");
}

/* ---- completions ---------------------------------------------------------------------------------- */

/* The client hung up (or reset): nothing more will be read by anyone. */
static int peer_gone(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLRDHUP};
  return fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* Waits under s->mu until done(j) holds, the client leaves (cancels; returns -1) or the server stops. */
static int wait_job(qvl_server *s, job *j, int fd, int (*done)(const job *, size_t), size_t arg) {
  while (!done(j, arg)) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
    pthread_cond_timedwait(&j->cv, &s->mu, &ts);
    if (!done(j, arg) && peer_gone(fd)) return j->cancel = 1, -1;
  }
  return 0;
}
static int is_done(const job *j, size_t arg) {
  return (void)arg, j->state == JOB_DONE;
}
static int is_started(const job *j, size_t arg) {
  return (void)arg, j->state == JOB_DONE || j->started;
}
static int has_text(const job *j, size_t rd) {
  return j->state == JOB_DONE || j->len > rd;
}

static int out_add(stream *st, const char *a, size_t n) {
  if (st->out_len + n > st->out_cap) {
    size_t cap = (st->out_len + n) * 2 + 256;
    char *p = realloc(st->out, cap);
    if (!p) return -1;
    st->out = p, st->out_cap = cap;
  }
  memcpy(st->out + st->out_len, a, n);
  st->out_len += n;
  return 0;
}

/* One SSE event "data: <json>\n\n"; takes o. */
static int out_event(stream *st, cJSON *o) {
  char *txt = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  int rc = !txt || out_add(st, "data: ", 6) || out_add(st, txt, strlen(txt)) || out_add(st, "\n\n", 2);
  free(txt);
  return rc ? -1 : 0;
}

/* A chat.completion.chunk with one choice: delta {role?, content?} and finish_reason (NULL: null). */
static cJSON *chunk(const stream *st, const char *role, const char *content, size_t n, const char *finish) {
  cJSON *o = srv_completion_head(st->s, st->j, "chat.completion.chunk", st->created);
  cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c0 = cJSON_CreateObject(), *d;
  cJSON_AddItemToArray(ch, c0);
  cJSON_AddNumberToObject(c0, "index", 0);
  d = cJSON_AddObjectToObject(c0, "delta");
  if (role) cJSON_AddStringToObject(d, "role", role);
  if (content) {
    char *tmp = strndup(content, n);
    cJSON_AddStringToObject(d, "content", tmp ? tmp : "");
    free(tmp);
  }
  cJSON_AddNullToObject(c0, "logprobs");
  if (finish)
    cJSON_AddStringToObject(c0, "finish_reason", finish);
  else
    cJSON_AddNullToObject(c0, "finish_reason");
  if (st->j->include_usage) cJSON_AddNullToObject(o, "usage");
  return o;
}

/* Produces the next SSE bytes: -1 on a hang-up or no memory (the stream ends with an error). */
static int stream_fill(stream *st) {
  qvl_server *s = st->s;
  job *j = st->j;
  if (st->phase == 0) return st->phase = 1, out_event(st, chunk(st, "assistant", "", 0, NULL));
  pthread_mutex_lock(&s->mu);
  int rc = 0;
  if (st->phase == 1) {
    if (wait_job(s, j, st->fd, has_text, st->rd))
      rc = -1;
    else if (j->len > st->rd)
      rc = out_event(st, chunk(st, NULL, j->text + st->rd, j->len - st->rd, NULL)), st->rd = j->len;
    else
      st->phase = 2;
  } else if (st->phase == 2) {
    if (j->err.status) {
      rc = out_event(st, srv_error_json(&j->err, j->id));
    } else {
      rc = out_event(st, chunk(st, NULL, NULL, 0, j->finish ? j->finish : "length"));
      if (!rc && j->include_usage) {
        cJSON *o = srv_completion_head(s, j, "chat.completion.chunk", st->created);
        cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToObject(o, "usage", srv_usage_json(j));
        rc = out_event(st, o);
      }
    }
    if (!rc) rc = out_add(st, "data: [DONE]\n\n", 14);
    st->phase = 3;
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  stream *st = cls;
  while (st->out_off == st->out_len) {
    st->out_off = st->out_len = 0;
    if (st->phase == 3) return MHD_CONTENT_READER_END_OF_STREAM;
    if (stream_fill(st)) return MHD_CONTENT_READER_END_WITH_ERROR;
  }
  size_t n = st->out_len - st->out_off < max ? st->out_len - st->out_off : max;
  memcpy(buf, st->out + st->out_off, n);
  st->out_off += n;
  return (ssize_t)n;
}

static void stream_free(void *cls) {
  stream *st = cls;
  char note[256];
  pthread_mutex_lock(&st->s->mu);
  if (st->j->state != JOB_DONE) st->j->cancel = 1; /* the client left mid-stream */
  job_note(note, sizeof note, st->j);
  srv_job_release(st->s, st->j);
  pthread_mutex_unlock(&st->s->mu);
  srv_log(st->s, st->rid, "POST /v1/chat/completions 200 stream %.3fs %s", srv_now() - st->t0, note);
  free(st->out);
  free(st);
}

static enum MHD_Result start_stream(qvl_server *s, struct MHD_Connection *c, conn *cn, job *j, int fd) {
  stream *st = calloc(1, sizeof *st);
  struct MHD_Response *r =
      st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free) : NULL;
  if (!r) {
    free(st);
    pthread_mutex_lock(&s->mu);
    j->cancel = 1;
    srv_job_release(s, j);
    pthread_mutex_unlock(&s->mu);
    return MHD_NO;
  }
  st->s = s, st->j = j, st->fd = fd, st->created = (long)time(NULL), st->t0 = cn->t0;
  snprintf(st->rid, sizeof st->rid, "%s", cn->rid);
  MHD_add_response_header(r, "Content-Type", "text/event-stream");
  MHD_add_response_header(r, "Cache-Control", "no-cache");
  MHD_add_response_header(r, "x-request-id", cn->rid);
  enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  cn->answered = 1;
  count_status(s, 200);
  return ok;
}

static enum MHD_Result chat_completions(qvl_server *s, struct MHD_Connection *c, conn *cn) {
  srv_error err = {0};
  job *j = calloc(1, sizeof *j);
  if (!j) return MHD_NO;
  pthread_cond_init(&j->cv, NULL);
  snprintf(j->id, sizeof j->id, "%s", cn->rid);
  j->media_dir = s->media_dir[0] ? s->media_dir : NULL;
  if (srv_parse_request(j, cn->body ? cn->body : "", cn->len, s->model, s->p.max_images, s->p.max_tokens, &err) ||
      srv_prepare_images(s, j, &err) || srv_enqueue(s, j, &err)) {
    srv_job_free(j);
    return send_error(s, c, cn, &err);
  }
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  int fd = ci ? ci->connect_fd : -1;
  pthread_mutex_lock(&s->mu);
  int gone = wait_job(s, j, fd, j->stream ? is_started : is_done, 0);
  cJSON *o = NULL;
  int status = 200;
  if (!gone && j->err.status && !j->started)
    status = j->err.status, o = srv_error_json(&j->err, j->id);
  else if (!gone && !j->stream) {
    if (j->err.status)
      status = j->err.status, o = srv_error_json(&j->err, j->id);
    else
      o = srv_completion_json(s, j);
  }
  int streaming = !gone && !o;
  job_note(cn->note, sizeof cn->note, j);
  if (j->err.status && !streaming)
    snprintf(cn->note + strlen(cn->note), sizeof cn->note - strlen(cn->note), ": %s", j->err.message);
  if (!streaming) srv_job_release(s, j);
  pthread_mutex_unlock(&s->mu);
  if (gone) {
    srv_log(s, cn->rid, "POST /v1/chat/completions - %.3fs %s (the client left)", srv_now() - cn->t0, cn->note);
    return MHD_NO; /* nobody to answer */
  }
  return streaming ? start_stream(s, c, cn, j, fd) : send_json(s, c, cn, status, o);
}

/* ---- the small routes --------------------------------------------------------------------------- */

static enum MHD_Result models(qvl_server *s, struct MHD_Connection *c, conn *cn) {
  cJSON *o = cJSON_CreateObject(), *d = cJSON_AddArrayToObject(o, "data"), *m = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "object", "list");
  cJSON_AddItemToArray(d, m);
  cJSON_AddStringToObject(m, "id", s->model);
  cJSON_AddStringToObject(m, "object", "model");
  cJSON_AddNumberToObject(m, "created", (double)s->created);
  cJSON_AddStringToObject(m, "owned_by", "qvl");
  return send_json(s, c, cn, 200, o);
}

static int emit(char *b, size_t cap, size_t *n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int emit(char *b, size_t cap, size_t *n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int k = *n < cap ? vsnprintf(b + *n, cap - *n, fmt, ap) : 0;
  va_end(ap);
  *n += k > 0 ? (size_t)k : 0;
  return 0;
}

/* One histogram; label: "" or a label pair ("stage=\"vision\"") added to every sample; head: print HELP/TYPE. */
static void emit_hist(char *b, size_t cap, size_t *n, const char *name, const char *help, const char *label, int head,
                      const srv_hist *h) {
  if (head) emit(b, cap, n, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
  const char *sep = label[0] ? "," : "";
  uint64_t cum = 0;
  for (int k = 0; k <= SRV_N_BUCKETS; k++) {
    cum += h->bucket[k];
    if (k < SRV_N_BUCKETS)
      emit(b, cap, n, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, label, sep, h->bounds[k], (unsigned long long)cum);
    else
      emit(b, cap, n, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, label, sep, (unsigned long long)cum);
  }
  if (label[0])
    emit(b, cap, n, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, label, h->sum, name, label, (unsigned long long)cum);
  else
    emit(b, cap, n, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, (unsigned long long)cum);
}

static void emit_one(char *b, size_t cap, size_t *n, const char *name, const char *kind, const char *help, double v) {
  emit(b, cap, n, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, kind, name, v);
}

static enum MHD_Result metrics(qvl_server *s, struct MHD_Connection *c, conn *cn) {
  static const char *stages[N_STAGES] = {"preprocess", "vision", "prefill", "decode", "step", "gap", "wait"};
  enum { CAP = 1 << 15 };
  char *b = malloc(CAP);
  size_t n = 0;
  if (!b) return MHD_NO;
  pthread_mutex_lock(&s->mu);
  srv_metrics m = s->m;
  int running = s->running, waiting = s->n_waiting;
  pthread_mutex_unlock(&s->mu);
  double now = srv_now(), up = now - s->t_start;
  emit(b, CAP, &n,
       "# HELP qvl_requests_total HTTP requests answered, by status code.\n"
       "# TYPE qvl_requests_total counter\n");
  for (int k = 0; k < SRV_N_CODES; k++)
    if (k < SRV_N_CODES - 1)
      emit(b, CAP, &n, "qvl_requests_total{code=\"%d\"} %llu\n", codes[k], (unsigned long long)m.by_code[k]);
    else
      emit(b, CAP, &n, "qvl_requests_total{code=\"other\"} %llu\n", (unsigned long long)m.by_code[k]);
  emit_one(b, CAP, &n, "qvl_requests_running", "gauge", "Requests in the running batch (prefilling or decoding).", running);
  emit_one(b, CAP, &n, "qvl_requests_waiting", "gauge", "Requests queued for the worker (the queue depth).", waiting);
  emit_one(b, CAP, &n, "qvl_queue_capacity", "gauge", "Requests that may wait before new ones get 503.",
           s->p.max_queue);
  emit_one(b, CAP, &n, "qvl_prompt_tokens_total", "counter", "Prompt tokens prefilled.", (double)m.prompt_tokens);
  emit_one(b, CAP, &n, "qvl_generation_tokens_total", "counter", "Tokens generated.", (double)m.gen_tokens);
  emit_one(b, CAP, &n, "qvl_images_total", "counter", "Images in requests that ran.", (double)m.images);
  emit_one(b, CAP, &n, "qvl_prompt_tokens_per_second", "gauge", "Prompt tokens per second over the last 10 s.",
           srv_rate_per_s(&m.prompt_rate, now, up));
  emit_one(b, CAP, &n, "qvl_generation_tokens_per_second", "gauge", "Tokens generated per second over the last 10 s.",
           srv_rate_per_s(&m.gen_rate, now, up));
  emit_one(b, CAP, &n, "qvl_images_per_second", "gauge", "Images per second over the last 10 s.",
           srv_rate_per_s(&m.image_rate, now, up));
  emit_one(b, CAP, &n, "qvl_vision_images_total", "counter", "Images through the vision tower (encoder cache misses).",
           (double)m.vision_images);
  emit_one(b, CAP, &n, "qvl_kv_cache_blocks_used", "gauge", "KV cache blocks held by running sequences.",
           (double)m.kv_blocks_used);
  emit_one(b, CAP, &n, "qvl_kv_cache_blocks_total", "gauge", "KV cache blocks (16 tokens each).",
           (double)m.kv_blocks_total);
  emit_one(b, CAP, &n, "qvl_kv_cache_usage_ratio", "gauge", "Used over total KV cache blocks.",
           m.kv_blocks_total ? (double)m.kv_blocks_used / (double)m.kv_blocks_total : 0);
  emit_one(b, CAP, &n, "qvl_preemptions_total", "counter", "Sequences whose blocks were freed for others (re-prefilled).",
           (double)m.preemptions);
  emit_one(b, CAP, &n, "qvl_steps_total", "counter", "Language-model steps (one batched forward each).",
           (double)m.steps);
  emit_one(b, CAP, &n, "qvl_step_tokens_total", "counter", "Tokens through those steps (prefill and decode).",
           (double)m.step_tokens);
  if (m.device_profile) { /* QVL_PROFILE=1 or 2: the ops' device time, for the device's busy share */
    static const char *kinds[3] = {"gemm", "attention", "other"};
    emit(b, CAP, &n,
         "# HELP qvl_device_seconds_total Device time of the steps' and vision passes' ops (QVL_PROFILE).\n"
         "# TYPE qvl_device_seconds_total counter\n");
    for (int k = 0; k < 3; k++)
      emit(b, CAP, &n, "qvl_device_seconds_total{kind=\"%s\"} %.6f\n", kinds[k], m.device_ms[k] / 1e3);
  }
  if (!s->p.no_prefix_cache) {
    emit_one(b, CAP, &n, "qvl_prefix_cache_hit_tokens_total", "counter",
             "Prompt tokens whose KV came from the prefix cache (whole blocks).", (double)m.prefix_hit_tokens);
    emit_one(b, CAP, &n, "qvl_prefix_cache_query_tokens_total", "counter", "Prompt tokens looked up.",
             (double)m.prefix_query_tokens);
    emit_one(b, CAP, &n, "qvl_prefix_cache_blocks", "gauge", "KV blocks the prefix cache keeps.",
             (double)m.prefix_blocks);
    emit_one(b, CAP, &n, "qvl_prefix_cache_hit_rate", "gauge", "Hit tokens over looked-up tokens since the start.",
             m.prefix_query_tokens ? (double)m.prefix_hit_tokens / (double)m.prefix_query_tokens : 0);
  }
  if (s->p.encoder_cache_bytes > 0) {
    emit_one(b, CAP, &n, "qvl_encoder_cache_hits_total", "counter", "Images whose vision rows the cache held.",
             (double)m.enc.hits);
    emit_one(b, CAP, &n, "qvl_encoder_cache_misses_total", "counter", "Images the cache did not hold.",
             (double)m.enc.misses);
    emit_one(b, CAP, &n, "qvl_encoder_cache_evictions_total", "counter", "Entries evicted (least recently used).",
             (double)m.enc.evictions);
    emit_one(b, CAP, &n, "qvl_encoder_cache_bytes", "gauge", "Bytes of vision rows held.", (double)m.enc.bytes);
    emit_one(b, CAP, &n, "qvl_encoder_cache_capacity_bytes", "gauge", "The cache's byte limit.",
             (double)s->p.encoder_cache_bytes);
    emit_one(b, CAP, &n, "qvl_encoder_cache_entries", "gauge", "Images held.", (double)m.enc.entries);
    uint64_t looked = m.enc.hits + m.enc.misses;
    emit_one(b, CAP, &n, "qvl_encoder_cache_hit_rate", "gauge", "Hits over lookups since the start (0 before any).",
             looked ? (double)m.enc.hits / (double)looked : 0);
  }
  emit_hist(b, CAP, &n, "qvl_time_to_first_token_seconds", "From queueing to the first generated token.", "", 1,
            &m.ttft);
  emit_hist(b, CAP, &n, "qvl_time_per_output_token_seconds", "Between consecutive tokens of one request.", "", 1,
            &m.tpot);
  emit_hist(b, CAP, &n, "qvl_request_duration_seconds", "From queueing to the last token.", "", 1, &m.e2e);
  emit_hist(b, CAP, &n, "qvl_queue_time_seconds", "From queueing to the start of the work.", "", 1, &m.queue);
  for (int k = 0; k < N_STAGES; k++) {
    char label[32];
    snprintf(label, sizeof label, "stage=\"%s\"", stages[k]);
    emit_hist(b, CAP, &n, "qvl_stage_seconds",
              "Image preprocessing (per scheduler call), vision tower (host time per call: the work is queued), prefill "
              "(admission to the first token), decode (first to last token), step (queued to its outputs, with the "
              "vision pass queued behind it), gap (a step's outputs to the next step queued: the device waits), wait (the "
              "scheduler blocked on a step's outputs after its admission and vision work).",
              label, k == 0, &m.stage[k]);
  }
  enum MHD_Result ok = send_buf(s, c, cn, 200, "text/plain; version=0.0.4", b, n < CAP ? n : CAP - 1);
  free(b);
  return ok;
}

/* ---- the handler -------------------------------------------------------------------------------- */

static enum MHD_Result route(qvl_server *s, struct MHD_Connection *c, conn *cn, const char *url, const char *method) {
  static const struct {
    const char *url, *method;
  } routes[] = {{"/v1/chat/completions", "POST"}, {"/v1/models", "GET"}, {"/health", "GET"}, {"/metrics", "GET"}};
  srv_error err = {0};
  int k = 0;
  while (k < 4 && strcmp(url, routes[k].url)) k++;
  if (k == 4)
    srv_errorf(&err, 404, "not_found_error", NULL, "not_found", "no route %.200s %.200s", method, url);
  else if (strcmp(method, routes[k].method))
    srv_errorf(&err, 405, "invalid_request_error", NULL, "method_not_allowed", "%.200s wants %s, not %.200s", url,
               routes[k].method, method);
  else if (cn->too_big)
    srv_errorf(&err, 413, "invalid_request_error", NULL, "body_too_large", "the body exceeds %zu bytes", s->p.max_body);
  if (err.status) return send_error(s, c, cn, &err);
  if (k == 0) return chat_completions(s, c, cn);
  if (k == 1) return models(s, c, cn);
  if (k == 2) return send_buf(s, c, cn, 200, "application/json", "{\"status\":\"ok\"}", 15);
  return metrics(s, c, cn);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **ctx) {
  (void)version;
  qvl_server *s = cls;
  conn *cn = *ctx;
  if (!cn) { /* first call: headers only */
    if (!(cn = calloc(1, sizeof *cn))) return MHD_NO;
    *ctx = cn;
    cn->method = method, cn->url = url, cn->t0 = srv_now();
    pthread_mutex_lock(&s->mu);
    uint64_t id = ++s->next_id;
    pthread_mutex_unlock(&s->mu);
    snprintf(cn->rid, sizeof cn->rid, "%s-%08lx%08llx", strcmp(url, "/v1/chat/completions") ? "req" : "chatcmpl",
             (unsigned long)s->created, (unsigned long long)id);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > s->p.max_body) {
      srv_error err;
      srv_errorf(&err, 413, "invalid_request_error", NULL, "body_too_large", "the body (%s bytes) exceeds %zu bytes",
                 cl, s->p.max_body);
      return send_error(s, c, cn, &err);
    }
    return MHD_YES;
  }
  if (*upload_size) { /* a piece of the body */
    if (!cn->too_big && cn->len + *upload_size > s->p.max_body) cn->too_big = 1, free(cn->body), cn->body = NULL;
    if (!cn->too_big) {
      if (cn->len + *upload_size + 1 > cn->cap) {
        size_t cap = (cn->len + *upload_size + 1) * 2;
        char *p = realloc(cn->body, cap > s->p.max_body + 1 ? s->p.max_body + 1 : cap);
        if (!p) return MHD_NO;
        cn->body = p, cn->cap = cap > s->p.max_body + 1 ? s->p.max_body + 1 : cap;
      }
      memcpy(cn->body + cn->len, upload, *upload_size);
      cn->len += *upload_size;
    }
    *upload_size = 0;
    return MHD_YES;
  }
  if (cn->answered) return MHD_YES;
  return route(s, c, cn, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ctx, enum MHD_RequestTerminationCode why) {
  (void)cls, (void)c, (void)why;
  conn *cn = *ctx;
  if (cn) free(cn->body), free(cn);
  *ctx = NULL;
}

/* ---- lifetime ------------------------------------------------------------------------------------ */

int qvl_server_start(qvl_server **out, qvl_engine *e, qvl_tokenizer *t, const qvl_server_params *p, char *err,
                     size_t err_cap) {
  *out = NULL;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->port)};
  const char *host = p->host ? p->host : "127.0.0.1";
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
    return snprintf(err, err_cap, "--host wants an IPv4 address, got \"%s\"", host), -1;
  qvl_server *s = calloc(1, sizeof *s);
  if (!s) return snprintf(err, err_cap, "out of memory"), -1;
  if (srv_init(s, e, t, p, err, err_cap)) return free(s), -1;
  s->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL,
                          on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED,
                          on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_CONNECTION_LIMIT,
                          (unsigned)512, MHD_OPTION_END);
  if (!s->d) {
    snprintf(err, err_cap, "cannot listen on %s:%d (in use, or not an address of this machine)", host, p->port);
    srv_fini(s);
    free(s);
    return -1;
  }
  *out = s;
  return 0;
}

int qvl_server_port(const qvl_server *s) {
  const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  return i ? i->port : -1;
}

void qvl_server_stop(qvl_server *s) {
  if (!s) return;
  srv_worker_stop(s);
  MHD_stop_daemon(s->d);
  srv_fini(s);
  free(s);
}
