/* srv_state.h - the server object: the listener, the queue the worker drains, the metrics. */
#ifndef QVL_SRV_STATE_H
#define QVL_SRV_STATE_H

#include <limits.h>

#include "runtime/enc_cache.h"
#include "server/srv_int.h"

#define SRV_N_CODES   8  /* 200 400 404 405 413 500 503 other */
#define SRV_N_BUCKETS 12 /* upper bounds per histogram, then +Inf */
#define SRV_RATE_SECS 10 /* the window of the per-second rates */

typedef struct srv_hist {
  const double *bounds; /* SRV_N_BUCKETS seconds, increasing */
  uint64_t bucket[SRV_N_BUCKETS + 1];
  double sum;
} srv_hist;

/* Counts per wall-clock second over the last SRV_RATE_SECS seconds: what /metrics reports as a rate. */
typedef struct srv_rate {
  int64_t sec[SRV_RATE_SECS];
  double n[SRV_RATE_SECS];
} srv_rate;

enum { STAGE_PREPROCESS, STAGE_VISION, STAGE_PREFILL, STAGE_DECODE, STAGE_STEP, STAGE_GAP, STAGE_WAIT, N_STAGES };

typedef struct srv_metrics {
  uint64_t by_code[SRV_N_CODES];
  uint64_t prompt_tokens, gen_tokens, images;
  uint64_t vision_images;     /* through the tower (encoder cache misses) */
  uint64_t steps, step_tokens, preemptions;
  int device_profile;         /* the backend profiles its ops (QVL_PROFILE=1 or 2): device_ms counts */
  double device_ms[3];        /* with QVL_PROFILE=1 or 2 only: device time of the steps' and vision passes' ops,
                               * [0] GEMMs, [1] attention, [2] everything else (the backend's profile) */
  int64_t kv_blocks_used, kv_blocks_total; /* used: held by sequences or the prefix cache */
  uint64_t prefix_hit_tokens, prefix_query_tokens;
  int64_t prefix_blocks;
  enc_cache_stats enc;        /* the scheduler's copy after each vision pass */
  srv_hist ttft;              /* queueing to the first token */
  srv_hist tpot;              /* between consecutive tokens of one request */
  srv_hist e2e;               /* queueing to the last token (requests the worker ran) */
  srv_hist queue;             /* queueing to the start of the work */
  srv_hist stage[N_STAGES];   /* image preprocessing (per scheduler call, the images of every request it encodes),
                               * the vision tower (per call), prefill (admission to the first token), decode (first
                               * to last token), step (a step queued to its outputs, with the vision pass queued
                               * behind it), gap (the previous step's outputs to the next step queued: host work while
                               * the device has nothing to do), wait (the scheduler blocked on the step's outputs
                               * after its admission and vision work: near the step's time, the device was the
                               * bottleneck; near 0, the host was, and the device waited for it) */
  srv_rate prompt_rate, gen_rate, image_rate;
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
  double t_start; /* srv_now() at start */
  uint64_t next_id;
  pthread_t worker;
  int worker_started;
  pthread_mutex_t mu; /* everything below, and every job's state */
  pthread_cond_t cv;  /* the worker's: a job was queued or the server stops */
  job *head, *tail;
  int n_waiting, running, stopping;
  srv_metrics m;
  struct sched *sc; /* the scheduler's own state (sched.c), touched by its thread only */
};

/* Everything but the listener: defaults, the media directory, metrics, the encoder cache, the worker thread.
 * srv_fini undoes it (stopping the worker when it runs); the caller owns s's memory. */
int srv_init(qvl_server *s, qvl_engine *e, qvl_tokenizer *t, const qvl_server_params *p, char *err, size_t err_cap);
void srv_fini(qvl_server *s);
/* sched.c: the scheduler's state (the KV pool from the engine, the encoder cache, buffers) and its thread. */
int srv_sched_open(qvl_server *s, char *err, size_t err_cap);
void srv_sched_close(qvl_server *s); /* NULL s->sc is a no-op */
void *srv_sched_main(void *arg);
/* The job's images checked and planned on the calling (submitting) thread (header, pixel limit, smart_resize: the
 * grids in its image parts); 400 in err when one fails. Decoding waits for the scheduler. */
int srv_prepare_images(qvl_server *s, job *j, srv_error *err);
int srv_enqueue(qvl_server *s, job *j, srv_error *err);
/* Queues n jobs at once (the scheduler admits them together); one that cannot be queued is DONE with its error and
 * one reference (the caller's). */
void srv_enqueue_all(qvl_server *s, job **js, int n);
void srv_worker_stop(qvl_server *s);
void srv_job_release(qvl_server *s, job *j);   /* under s->mu */
void srv_observe(srv_hist *h, double seconds); /* under s->mu */
/* answer.c: OpenAI's objects. error: {"error": {message, type, param, code}, "id"}; the completion and its parts
 * read the job under s->mu. */
cJSON *srv_error_json(const srv_error *e, const char *rid);
cJSON *srv_usage_json(const job *j);
cJSON *srv_completion_head(const qvl_server *s, const job *j, const char *object, long created);
cJSON *srv_completion_json(const qvl_server *s, const job *j);
void srv_count(srv_rate *r, double now, double n); /* under s->mu; now: srv_now() */
double srv_rate_per_s(const srv_rate *r, double now, double uptime);
/* One line on the server's log (p.log), "qvl serve: <rid> ...", when it has one. */
void srv_log(const qvl_server *s, const char *rid, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
