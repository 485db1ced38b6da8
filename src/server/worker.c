/* worker.c - the one thread that owns the engine and the tokenizer: it takes jobs from the queue in order and
 * runs each to the end (images -> chat template -> generate), publishing text as it is decoded. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/srv_state.h"

void srv_job_release(qvl_server *s, job *j) { /* under s->mu */
  (void)s;
  if (--j->refs == 0) srv_job_free(j);
}

static int append_text(job *j, const char *t, size_t n) { /* under s->mu */
  if (j->len + n + 1 > j->cap) {
    size_t cap = (j->len + n + 1) * 2;
    char *p = realloc(j->text, cap);
    if (!p) return -1;
    j->text = p, j->cap = cap;
  }
  memcpy(j->text + j->len, t, n);
  j->len += n;
  j->text[j->len] = '\0';
  return 0;
}

typedef struct gen_ctx {
  qvl_server *s;
  job *j;
  qvl_detok *d;
  qvl_stopper *stop;
  int32_t last;
  double t_start, t_first, t_last; /* the generation's start, its first token, the previous token */
  int hit;       /* a stop string matched */
} gen_ctx;

static int on_token(void *ud, int32_t id) {
  gen_ctx *g = ud;
  qvl_server *s = g->s;
  const char *piece = "", *text = "";
  size_t n = 0, len = 0;
  qvl_detok_push(g->d, id, &piece, &n);
  qvl_stopper_push(g->stop, piece, n, &text, &len, &g->hit);
  pthread_mutex_lock(&s->mu);
  g->last = id;
  int fail = append_text(g->j, text, len);
  double now = srv_now();
  if (g->j->n_gen++ == 0) {
    g->j->started = 1, g->t_first = now;
    srv_observe(&s->m.ttft, now - g->j->t_queued);
    srv_observe(&s->m.stage[STAGE_PREFILL], now - g->t_start);
  } else {
    srv_observe(&s->m.tpot, now - g->t_last);
  }
  g->t_last = now;
  s->m.gen_tokens++;
  srv_count(&s->m.gen_rate, now, 1);
  int stop = g->j->cancel || s->stopping || fail || g->hit;
  pthread_cond_broadcast(&g->j->cv);
  pthread_mutex_unlock(&s->mu);
  return stop;
}

/* Status for an engine/tokenizer failure: the request's fault (400) or ours (500). */
static int http_status(int rc) {
  return rc == QVL_ERR_INVALID_ARG || rc == QVL_ERR_FORMAT || rc == QVL_ERR_LIMIT || rc == QVL_ERR_UNSUPPORTED ? 400
                                                                                                               : 500;
}

static void fail(qvl_server *s, job *j, int rc, const char *msg) {
  pthread_mutex_lock(&s->mu);
  int st = http_status(rc);
  srv_errorf(&j->err, st, st == 400 ? "invalid_request_error" : "server_error", NULL, qvl_status_name(rc), "%s", msg);
  pthread_mutex_unlock(&s->mu);
}

static void observe_stage(qvl_server *s, int stage, double t0) {
  pthread_mutex_lock(&s->mu);
  srv_observe(&s->m.stage[stage], srv_now() - t0);
  pthread_mutex_unlock(&s->mu);
}

/* The images, then the prompt with each image's pad run sized by its grid. */
static int prepare(qvl_server *s, job *j, qvl_image_batch **batch, const int32_t **ids, size_t *n) {
  int rc;
  if (j->n_images) {
    double t0 = srv_now();
    if ((rc = qvl_preprocess_images(s->e, j->images, j->n_images, &j->ip, batch)))
      return fail(s, j, rc, qvl_errmsg(s->e)), rc;
    observe_stage(s, STAGE_PREPROCESS, t0);
    const qvl_pixels *px = qvl_image_batch_pixels(*batch);
    for (int i = 0, k = 0; i < j->n_parts; i++)
      if (j->parts[i].kind == QVL_PART_IMAGE) memcpy(j->parts[i].grid_thw, px->grid_thw + 3 * k++, 3 * sizeof(int32_t));
  }
  qvl_chat chat = {.kind = s->tmpl, .messages = j->msgs, .n_messages = j->n_msgs, .add_generation_prompt = 1};
  if ((rc = qvl_chat_encode(s->t, &chat, ids, n))) fail(s, j, rc, qvl_tokenizer_errmsg(s->t));
  return rc;
}

static void run_job(qvl_server *s, job *j) {
  qvl_image_batch *batch = NULL;
  const int32_t *ids = NULL;
  size_t n = 0;
  gen_ctx g = {.s = s, .j = j, .last = -1};
  if (prepare(s, j, &batch, &ids, &n)) goto done;
  if (qvl_detok_open(&g.d, s->t, 1) || qvl_stopper_open(&g.stop, j->s.stop, j->s.n_stop_strings)) {
    fail(s, j, QVL_ERR_NOMEM, "cannot open the detokenizer");
    goto done;
  }
  j->s.n_stop = qvl_tokenizer_stop_ids(s->t, &j->s.stop_ids);
  pthread_mutex_lock(&s->mu);
  j->n_prompt = (int)n;
  s->m.prompt_tokens += n, s->m.images += (uint64_t)j->n_images;
  srv_count(&s->m.image_rate, srv_now(), j->n_images);
  srv_count(&s->m.prompt_rate, srv_now(), (double)n);
  pthread_mutex_unlock(&s->mu);
  const qvl_pixels *px = batch ? qvl_image_batch_pixels(batch) : NULL;
  g.t_start = srv_now();
  int rc = qvl_generate_ids(s->e, ids, (int)n, px, &j->s, on_token, &g);
  if (rc) {
    fail(s, j, rc, qvl_errmsg(s->e));
    goto done;
  }
  /* the detokenizer's tail goes through the stop strings too; then what they held back, unless one matched */
  const char *piece = "", *tail = "", *held = "";
  size_t n_piece = 0, len = 0, n_held = 0;
  qvl_detok_flush(g.d, &piece, &n_piece);
  if (!g.hit) qvl_stopper_push(g.stop, piece, n_piece, &tail, &len, &g.hit);
  if (!g.hit) qvl_stopper_flush(g.stop, &held, &n_held);
  int stopped = g.hit;
  for (int i = 0; i < j->s.n_stop; i++) stopped |= g.last == j->s.stop_ids[i];
  pthread_mutex_lock(&s->mu);
  append_text(j, tail, len);
  append_text(j, held, n_held);
  j->finish = stopped ? "stop" : "length";
  if (j->n_gen) srv_observe(&s->m.stage[STAGE_DECODE], srv_now() - g.t_first);
  pthread_mutex_unlock(&s->mu);
done:
  qvl_detok_close(g.d);
  qvl_stopper_close(g.stop);
  qvl_image_batch_free(batch);
}

void *srv_worker_main(void *arg) {
  qvl_server *s = arg;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    while (!s->head && !s->stopping) pthread_cond_wait(&s->cv, &s->mu);
    if (s->stopping) break;
    job *j = s->head;
    s->head = j->next;
    if (!s->head) s->tail = NULL;
    s->n_waiting--, s->running++;
    j->state = JOB_RUNNING;
    srv_observe(&s->m.queue, srv_now() - j->t_queued);
    int cancelled = j->cancel;
    pthread_mutex_unlock(&s->mu);
    if (!cancelled) run_job(s, j);
    pthread_mutex_lock(&s->mu);
    s->running--;
    if (!cancelled && j->n_gen) srv_observe(&s->m.e2e, srv_now() - j->t_queued);
    j->state = JOB_DONE;
    pthread_cond_broadcast(&j->cv);
    srv_job_release(s, j);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* Queues j (the caller keeps a reference) or says why not. */
int srv_enqueue(qvl_server *s, job *j, srv_error *err) {
  pthread_mutex_lock(&s->mu);
  int rc = 0;
  if (s->stopping) {
    srv_errorf(err, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
    rc = -1;
  } else if (s->n_waiting >= s->p.max_queue) {
    srv_errorf(err, 503, "server_error", NULL, "queue_full", "%d requests are already waiting; try again later",
               s->n_waiting);
    rc = -1;
  } else {
    j->refs = 2, j->state = JOB_QUEUED, j->t_queued = srv_now();
    if (s->tail)
      s->tail->next = j;
    else
      s->head = j;
    s->tail = j;
    s->n_waiting++;
    pthread_cond_signal(&s->cv);
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

/* Stops the worker: the running job is cancelled, waiting ones end with 503. */
void srv_worker_stop(qvl_server *s) {
  if (!s->worker_started) return;
  s->worker_started = 0;
  pthread_mutex_lock(&s->mu);
  s->stopping = 1;
  while (s->head) {
    job *j = s->head;
    s->head = j->next;
    srv_errorf(&j->err, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
    j->state = JOB_DONE;
    pthread_cond_broadcast(&j->cv);
    srv_job_release(s, j);
  }
  s->tail = NULL, s->n_waiting = 0;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  pthread_join(s->worker, NULL);
}

static const double latency_bounds[SRV_N_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double token_bounds[SRV_N_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.03,
                                                   0.05,  0.075,  0.1,   0.25, 0.5,  1};

int srv_init(qvl_server *s, qvl_engine *e, qvl_tokenizer *t, const qvl_server_params *p, char *err, size_t err_cap) {
  s->e = e, s->t = t, s->p = *p;
  if (!s->p.max_queue) s->p.max_queue = 64;
  if (!s->p.max_body) s->p.max_body = 64u << 20;
  if (!s->p.max_images) s->p.max_images = 16;
  if (!s->p.max_tokens) s->p.max_tokens = 256;
  snprintf(s->model, sizeof s->model, "%s", p->model ? p->model : "qvl");
  s->created = (long)time(NULL), s->t_start = srv_now();
  if (p->media_dir && !realpath(p->media_dir, s->media_dir))
    return snprintf(err, err_cap, "--allowed-local-media-path %s: no such directory", p->media_dir), -1;
  s->m.ttft.bounds = s->m.e2e.bounds = s->m.queue.bounds = latency_bounds, s->m.tpot.bounds = token_bounds;
  for (int k = 0; k < N_STAGES; k++) s->m.stage[k].bounds = latency_bounds;
  qvl_model_info info;
  qvl_engine_info(e, &info);
  s->tmpl = strcmp(info.arch, "qwen3_vl") ? QVL_CHAT_QWEN2_5_VL : QVL_CHAT_QWEN3_VL;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  if (pthread_create(&s->worker, NULL, srv_worker_main, s)) {
    pthread_cond_destroy(&s->cv), pthread_mutex_destroy(&s->mu);
    return snprintf(err, err_cap, "cannot start the worker thread"), -1;
  }
  s->worker_started = 1;
  return 0;
}

void srv_fini(qvl_server *s) {
  srv_worker_stop(s);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
}
