/* srv_state.h - the server object: the listener, the queue the worker drains, the metrics. */
#ifndef QVL_SRV_STATE_H
#define QVL_SRV_STATE_H

#include <limits.h>

#include "server/srv_int.h"

#define SRV_N_CODES   8  /* 200 400 404 405 413 500 503 other */
#define SRV_N_BUCKETS 12 /* upper bounds per histogram, then +Inf */

typedef struct srv_hist {
  const double *bounds; /* SRV_N_BUCKETS seconds, increasing */
  uint64_t bucket[SRV_N_BUCKETS + 1];
  double sum;
} srv_hist;

typedef struct srv_metrics {
  uint64_t by_code[SRV_N_CODES];
  uint64_t prompt_tokens, gen_tokens;
  srv_hist ttft; /* queueing to the first token */
  srv_hist tpot; /* between consecutive tokens of one request */
  srv_hist e2e;  /* queueing to the last token (requests the worker ran) */
} srv_metrics;

struct qvl_server {
  struct MHD_Daemon *d;
  qvl_engine *e;
  qvl_tokenizer *t;
  qvl_chat_template tmpl;
  qvl_server_params p;
  char model[256];
  char media_dir[PATH_MAX]; /* realpath of --allowed-local-media-path, or "" */
  long created;
  uint64_t next_id;
  pthread_t worker;
  pthread_mutex_t mu; /* everything below, and every job's state */
  pthread_cond_t cv;  /* the worker's: a job was queued or the server stops */
  job *head, *tail;
  int n_waiting, running, stopping;
  srv_metrics m;
};

void *srv_worker_main(void *arg);
int srv_enqueue(qvl_server *s, job *j, srv_error *err);
void srv_worker_stop(qvl_server *s);
void srv_job_release(qvl_server *s, job *j);   /* under s->mu */
void srv_observe(srv_hist *h, double seconds); /* under s->mu */

#endif
