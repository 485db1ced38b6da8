/* srv_int.h - what the server's parts share: a parsed request (a job), the queue, the metrics. */
#ifndef QVL_SRV_INT_H
#define QVL_SRV_INT_H

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>

#include "server/server.h"

/* An error answer: the HTTP status and OpenAI's error object fields. */
typedef struct srv_error {
  int status;       /* 400, 404, 413, 500, 503 */
  const char *type; /* "invalid_request_error", "not_found_error", "server_error", ... */
  char param[96];   /* the offending field ("messages[0].content[1]"), or "" */
  const char *code; /* a short machine code, or NULL */
  char message[512];
} srv_error;

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

typedef struct job {
  /* the request, set by the HTTP thread before queueing, then read-only */
  char id[48];
  const char *media_dir; /* set before parsing: --allowed-local-media-path (a realpath), or NULL */
  cJSON *root;           /* owns every string the messages point into */
  qvl_chat_message *msgs;
  int n_msgs;
  qvl_chat_part *parts; /* all messages' parts; image parts' grids are planned by the submitting thread */
  int n_parts;
  qvl_image *images; /* decoded data: URL bytes, in order of appearance; the scheduler frees them once preprocessed */
  uint8_t **image_bytes;
  int n_images;
  qvl_image_params ip;
  const char **stop; /* stop strings (s.stop points here) */
  qvl_sampling s;
  int stream, include_usage;
  /* the state, under the server's lock */
  int state;
  int started;   /* the first token came: a stream answers 200 from now on */
  srv_error err; /* err.status != 0: failed (before the first token: the HTTP answer) */
  char *text;    /* detokenized output so far */
  size_t len, cap;
  int n_prompt, n_gen;
  const char *finish; /* "stop" or "length" */
  int cancel;         /* the client went away */
  int refs;           /* HTTP thread + worker */
  pthread_cond_t cv;
  double t_queued;
  struct job *next;
} job;

/* request.c: body -> job (queued by the caller). Returns 0, or fills err. model: the served name. */
int srv_parse_request(job *j, const char *body, size_t len, const char *model, int max_images, int max_tokens,
                      srv_error *err);
/* The same from a parsed body, which the job takes (root = NULL: j->root, set already); model NULL takes any name. */
int srv_parse_body(job *j, cJSON *root, const char *model, int max_images, int max_tokens, srv_error *err);
void srv_job_free(job *j); /* the request's memory; NULL is a no-op */

void srv_errorf(srv_error *e, int status, const char *type, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

double srv_now(void);

#endif
