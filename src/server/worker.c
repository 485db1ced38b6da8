/* worker.c - the one thread that owns the engine and the tokenizer: it takes jobs from the queue in order and
 * runs each to the end (images -> chat template -> generate), publishing text as it is decoded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
  double t_last; /* when the previous token came */
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
    g->j->started = 1;
    srv_observe(&s->m.ttft, now - g->j->t_queued);
  } else {
    srv_observe(&s->m.tpot, now - g->t_last);
  }
  g->t_last = now;
  s->m.gen_tokens++;
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

/* The images, then the prompt with each image's pad run sized by its grid. */
static int prepare(qvl_server *s, job *j, qvl_image_batch **batch, const int32_t **ids, size_t *n) {
  int rc;
  if (j->n_images) {
    if ((rc = qvl_preprocess_images(s->e, j->images, j->n_images, &j->ip, batch)))
      return fail(s, j, rc, qvl_errmsg(s->e)), rc;
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
  s->m.prompt_tokens += n;
  pthread_mutex_unlock(&s->mu);
  const qvl_pixels *px = batch ? qvl_image_batch_pixels(batch) : NULL;
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
