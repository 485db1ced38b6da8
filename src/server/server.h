/* server.h - the OpenAI-compatible HTTP server behind `qvl serve` (docs/SERVING.md).
 *
 *   HTTP threads (libmicrohttpd, one per connection)        scheduler thread (owns engine, tokenizer, KV, caches)
 *     read body -> parse + validate JSON (request.c)          admit: chat template, M-RoPE positions, sampler
 *     check + plan the images: grids (worker.c)      ->       vision: all admitted images preprocessed in one call
 *                                                             (nvJPEG + kernels on CUDA), encoder cache, else one
 *                                                             tower call for all; features stay on the device
 *     queue (bounded; full: 503)                              step: decode tokens + prefill chunks, one lm_step
 *     wait for the first token / the end             <-       sample, detokenize, stop strings, publish
 *     JSON or SSE out; a hung-up client cancels it            (a cancelled sequence leaves at the next step)
 *
 * Continuous batching over a paged KV cache (sched.c); `qvl batch` (batch.c) submits through the same queue. */
#ifndef QVL_SERVER_H
#define QVL_SERVER_H

#include <stddef.h>
#include <stdio.h>

#include "qvl.h"

typedef struct qvl_server qvl_server;

typedef struct qvl_server_params {
  const char *host;      /* IPv4 address to bind; NULL = "127.0.0.1" */
  int port;              /* 0 = any free port (qvl_server_port says which) */
  const char *model;     /* the name /v1/models lists and requests may name; NULL = "qvl" */
  int max_queue;         /* requests waiting at most, beyond the running one; 0 = 64 */
  size_t max_body;       /* request body bytes at most; 0 = 64 MiB */
  int max_images;        /* images per request at most; 0 = 16 */
  int max_tokens;        /* default max_tokens when a request names none; 0 = 256 */
  const char *media_dir; /* image_url file://PATH allowed under this directory; NULL = none */
  int64_t kv_tokens;     /* KV cache of all running sequences together, in tokens; 0 = 131072 */
  int max_running;       /* sequences admitted at once (prefilling or decoding); 0 = 256 */
  int step_tokens;       /* tokens of one step (decode tokens + prefill chunks); 0 = 8192 */
  int64_t encoder_cache_bytes; /* vision rows kept by image hash, at most this many bytes; 0 = 1 GiB, < 0 = off */
  int no_prefix_cache;   /* 1: prompts never start on KV blocks of earlier ones */
  int no_tune;           /* 1: GEMM kernels timed when a row count first comes, not for all of them at start */
  FILE *log;             /* one line per request (its id, route, status, tokens, seconds, error); NULL = none */
} qvl_server_params;

/* Starts listening and the worker. e (opened with QVL_LOAD_ALL) and t are borrowed, used only by the worker,
 * and must outlive the server. On failure returns nonzero with the reason in err. */
int qvl_server_start(qvl_server **out, qvl_engine *e, qvl_tokenizer *t, const qvl_server_params *p, char *err,
                     size_t err_cap);
int qvl_server_port(const qvl_server *s);
/* Cancels what runs, answers what waits with 503, stops the threads. NULL is a no-op. */
void qvl_server_stop(qvl_server *s);

/* What a batch did: lines read, answered 200 or not, the work of the ones that ran, and how it was scheduled. */
typedef struct qvl_batch_stats {
  int64_t lines, ok, failed;
  int64_t images, prompt_tokens, gen_tokens;
  double seconds;
  /* the scheduler's counters (as /metrics names them) */
  int64_t steps, step_tokens, preemptions, vision_images, encoder_cache_hits, prefix_hit_tokens;
} qvl_batch_stats;

/* Offline jobs (`qvl batch`): the same request path as the server, without HTTP. Each line of in is an OpenAI
 * batch request, {"custom_id": ..., "body": {a chat.completions request}} ("method" and "url", when present, must be
 * POST and /v1/chat/completions; any "model" name is taken; "stream" is ignored). Each answer goes to out as one line,
 * in input order:
 *   {"id", "custom_id", "response": {"status_code": 200, "request_id", "body": {chat.completion}}, "error": null}
 *   {"id", "custom_id", "response": null, "error": {"status_code", "message", "type", "param", "code"}}
 * A failing line is answered so and the job goes on. Up to p->max_queue requests are in flight. progress (NULL:
 * none) gets a progress line as lines finish and a throughput summary at the end. Returns 0, or nonzero when in
 * or out fail (err says); *st is filled either way. */
int qvl_batch_run(qvl_engine *e, qvl_tokenizer *t, const qvl_server_params *p, FILE *in, FILE *out, FILE *progress,
                  qvl_batch_stats *st, char *err, size_t err_cap);

#endif
