/* worker.c - the queue between the submitting threads (HTTP connections, qvl batch) and the scheduler (sched.c),
 * image planning on the submitting thread, and the server's lifetime. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "image/image.h"
#include "qvl_internal.h"
#include "server/srv_state.h"

void srv_job_release(qvl_server *s, job *j) { /* under s->mu */
  (void)s;
  if (--j->refs == 0) srv_job_free(j);
}

/* Header, pixel limit and smart_resize of each image, nothing decoded (microseconds): a request the scheduler could
 * only refuse is refused here, and the grids size the image pad runs. The pixels are made by the scheduler (sched.c
 * preprocess), for all the requests it admits together in one call on the engine. */
int srv_prepare_images(qvl_server *s, job *j, srv_error *err) {
  const qvl_preproc_config *pc = qvl_engine_preproc(s->e);
  for (int i = 0, k = 0; i < j->n_parts; i++) {
    if (j->parts[i].kind != QVL_PART_IMAGE) continue;
    qvl_err e = {0};
    char what[32];
    snprintf(what, sizeof what, "image %d", k);
    int rc = img_grid(j->parts[i].grid_thw, pc, &j->images[k++], &j->ip, what, &e);
    if (rc) return srv_errorf(err, 400, "invalid_request_error", NULL, qvl_status_name(rc), "%s", e.msg), -1;
  }
  return 0;
}

/* Under s->mu: queues j (the caller keeps a reference) or says why not. */
static int enqueue_locked(qvl_server *s, job *j, srv_error *err) {
  if (s->stopping)
    return srv_errorf(err, 503, "server_error", NULL, "shutting_down", "the server is shutting down"), -1;
  if (s->n_waiting >= s->p.max_queue)
    return srv_errorf(err, 503, "server_error", NULL, "queue_full", "%d requests are already waiting; try again later",
                      s->n_waiting),
           -1;
  j->refs = 2, j->state = JOB_QUEUED, j->t_queued = srv_now();
  if (s->tail)
    s->tail->next = j;
  else
    s->head = j;
  s->tail = j;
  s->n_waiting++;
  return 0;
}

int srv_enqueue(qvl_server *s, job *j, srv_error *err) {
  pthread_mutex_lock(&s->mu);
  int rc = enqueue_locked(s, j, err);
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

void srv_enqueue_all(qvl_server *s, job **js, int n) {
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < n; i++)
    if (enqueue_locked(s, js[i], &js[i]->err)) js[i]->state = JOB_DONE, js[i]->refs = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
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
  if (!s->p.max_running) s->p.max_running = 256;
  if (!s->p.step_tokens) s->p.step_tokens = 8192;
  if (!s->p.kv_tokens) s->p.kv_tokens = 131072;
  if (!s->p.encoder_cache_bytes) s->p.encoder_cache_bytes = 1ll << 30;
  snprintf(s->model, sizeof s->model, "%s", p->model ? p->model : "qvl");
  s->created = (long)time(NULL), s->t_start = srv_now();
  if (p->media_dir && !realpath(p->media_dir, s->media_dir))
    return snprintf(err, err_cap, "--allowed-local-media-path %s: no such directory", p->media_dir), -1;
  s->m.ttft.bounds = s->m.e2e.bounds = s->m.queue.bounds = latency_bounds, s->m.tpot.bounds = token_bounds;
  for (int k = 0; k < N_STAGES; k++) s->m.stage[k].bounds = latency_bounds;
  s->m.stage[STAGE_STEP].bounds = s->m.stage[STAGE_GAP].bounds = s->m.stage[STAGE_WAIT].bounds =
      token_bounds; /* milliseconds matter there */
  s->m.device_profile = qvl_engine_backend(e)->profile != NULL;
  qvl_model_info info;
  qvl_engine_info(e, &info);
  s->tmpl = strcmp(info.arch, "qwen3_vl") ? QVL_CHAT_QWEN2_5_VL : QVL_CHAT_QWEN3_VL;
  if (srv_sched_open(s, err, err_cap)) return srv_sched_close(s), -1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  if (pthread_create(&s->worker, NULL, srv_sched_main, s)) {
    pthread_cond_destroy(&s->cv), pthread_mutex_destroy(&s->mu);
    srv_sched_close(s);
    return snprintf(err, err_cap, "cannot start the scheduler thread"), -1;
  }
  s->worker_started = 1;
  return 0;
}

void srv_fini(qvl_server *s) {
  srv_worker_stop(s);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  srv_sched_close(s);
}
