/* batch.c - `qvl batch`: OpenAI batch lines through the server's own path (request.c parses, the worker runs,
 * answer.c shapes the answer), without HTTP. A window of up to max_queue requests is in flight; answers are
 * written in input order as the oldest finishes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/srv_state.h"

typedef struct slot {
  job *j;
  char *custom_id; /* NULL: the line named none */
  int64_t no;      /* line number, from 1 */
} slot;

typedef struct batch {
  qvl_server *s;
  FILE *out, *progress;
  int tty;
  int64_t total; /* lines in the file when it could be counted, else 0 */
  double t0, t_shown;
  qvl_batch_stats st;
} batch;

static job *new_job(qvl_server *s, int64_t no) {
  job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  pthread_cond_init(&j->cv, NULL);
  snprintf(j->id, sizeof j->id, "chatcmpl-batch-%08lx%08llx", (unsigned long)s->created, (unsigned long long)no);
  j->media_dir = s->media_dir[0] ? s->media_dir : NULL;
  return j;
}

#define LINE_BAD(...) (srv_errorf(&j->err, 400, "invalid_request_error", NULL, NULL, __VA_ARGS__), -1)

/* One input line -> a parsed job (queued by the caller), or j->err says why not. */
static int parse_line(batch *b, slot *sl, char *text, size_t len) {
  job *j = sl->j;
  cJSON *line = cJSON_ParseWithLength(text, len);
  int rc = 0;
  if (!cJSON_IsObject(line)) {
    rc = LINE_BAD("line %lld is not a JSON object", (long long)sl->no);
  } else {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(line, "custom_id");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(line, "method");
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(line, "url");
    if (cJSON_IsString(id)) sl->custom_id = strdup(id->valuestring);
    if (method && !(cJSON_IsString(method) && !strcmp(method->valuestring, "POST")))
      rc = LINE_BAD("line %lld: 'method' must be \"POST\"", (long long)sl->no);
    else if (url && !(cJSON_IsString(url) && !strcmp(url->valuestring, "/v1/chat/completions")))
      rc = LINE_BAD("line %lld: 'url' must be \"/v1/chat/completions\" (the one endpoint qvl batch runs)",
                    (long long)sl->no);
    else if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(line, "body")))
      rc = LINE_BAD("line %lld: 'body' must be an object (the chat.completions request)", (long long)sl->no);
    else
      rc = srv_parse_body(j, cJSON_DetachItemFromObjectCaseSensitive(line, "body"), NULL, b->s->p.max_images,
                          b->s->p.max_tokens, &j->err);
  }
  cJSON_Delete(line);
  j->stream = 0;
  return rc;
}

static void show_progress(batch *b, int last) {
  double now = srv_now(), dt = now - b->t0;
  if (!b->progress || (!last && now - b->t_shown < (b->tty ? 0.5 : 10))) return;
  b->t_shown = now;
  char total[32] = "";
  if (b->total) snprintf(total, sizeof total, "/%lld", (long long)b->total);
  fprintf(b->progress, "%sqvl batch: %lld%s lines, %lld failed, %.1f lines/s%s", b->tty ? "\r" : "",
          (long long)(b->st.ok + b->st.failed), total, (long long)b->st.failed,
          dt > 0 ? (double)(b->st.ok + b->st.failed) / dt : 0.0, b->tty && !last ? "" : "\n");
  fflush(b->progress);
}

/* Waits for the slot's job, writes its answer line, frees the slot. Returns nonzero when out fails. */
static int finish(batch *b, slot *sl) {
  qvl_server *s = b->s;
  job *j = sl->j;
  cJSON *o = cJSON_CreateObject();
  char id[48];
  snprintf(id, sizeof id, "batch_req_%lld", (long long)sl->no);
  cJSON_AddStringToObject(o, "id", id);
  if (sl->custom_id)
    cJSON_AddStringToObject(o, "custom_id", sl->custom_id);
  else
    cJSON_AddNullToObject(o, "custom_id");
  pthread_mutex_lock(&s->mu);
  while (j->state != JOB_DONE) pthread_cond_wait(&j->cv, &s->mu);
  if (!j->err.status) {
    cJSON *r = cJSON_AddObjectToObject(o, "response");
    cJSON_AddNumberToObject(r, "status_code", 200);
    cJSON_AddStringToObject(r, "request_id", j->id);
    cJSON_AddItemToObject(r, "body", srv_completion_json(s, j));
    cJSON_AddNullToObject(o, "error");
    b->st.ok++, b->st.images += j->n_images, b->st.prompt_tokens += j->n_prompt, b->st.gen_tokens += j->n_gen;
  } else {
    cJSON_AddNullToObject(o, "response");
    cJSON *e = srv_error_json(&j->err, j->id), *er = cJSON_DetachItemFromObject(e, "error");
    cJSON_AddNumberToObject(er, "status_code", j->err.status);
    cJSON_AddItemToObject(o, "error", er);
    cJSON_Delete(e);
    b->st.failed++;
  }
  srv_job_release(s, j);
  pthread_mutex_unlock(&s->mu);
  char *txt = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  int rc = !txt || fputs(txt, b->out) == EOF || fputc('\n', b->out) == EOF;
  free(txt), free(sl->custom_id);
  memset(sl, 0, sizeof *sl);
  show_progress(b, 0);
  return rc;
}

/* Lines with more than white space in a regular file (for the progress line); 0 when in is not one. */
static int64_t count_lines(FILE *in) {
  struct stat sb;
  long at = ftell(in);
  if (fstat(fileno(in), &sb) || !S_ISREG(sb.st_mode) || at < 0) return 0;
  char buf[1 << 16];
  int64_t n = 0;
  size_t k;
  int filled = 0; /* the current line has more than white space */
  while ((k = fread(buf, 1, sizeof buf, in)) > 0)
    for (size_t i = 0; i < k; i++)
      if (buf[i] == '\n')
        n += filled, filled = 0;
      else
        filled |= buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\r';
  n += filled;
  fseek(in, at, SEEK_SET);
  return n;
}

static int blank(const char *t, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (t[i] != ' ' && t[i] != '\t' && t[i] != '\r' && t[i] != '\n') return 0;
  return 1;
}

/* Queues the prepared jobs not yet queued, all at once: the scheduler admits them into one step. */
static void submit(batch *b, job **pending, int *n_pending) {
  srv_enqueue_all(b->s, pending, *n_pending);
  *n_pending = 0;
}

/* Reads, prepares and answers every line; the window slots[] is a ring of in-flight requests, queued in groups
 * (when the oldest must be waited for, and at the end). */
static int run(batch *b, FILE *in, char *err, size_t err_cap) {
  int w = b->s->p.max_queue, head = 0, n_in = 0, n_pending = 0, rc = 0;
  slot *slots = calloc((size_t)w, sizeof *slots);
  job **pending = calloc((size_t)w, sizeof *pending);
  char *text = NULL;
  size_t cap = 0;
  int64_t no = 0;
  if (!slots || !pending) return free(slots), free(pending), snprintf(err, err_cap, "out of memory"), -1;
  for (ssize_t len; !rc && (len = getline(&text, &cap, in)) >= 0;) {
    no++;
    if (blank(text, (size_t)len)) continue;
    if (n_in == w) submit(b, pending, &n_pending), rc = finish(b, &slots[head]), head = (head + 1) % w, n_in--;
    slot *sl = &slots[(head + n_in++) % w];
    sl->no = no, b->st.lines++;
    if (!(sl->j = new_job(b->s, no))) {
      snprintf(err, err_cap, "out of memory"), rc = -1;
      break;
    }
    if (parse_line(b, sl, text, (size_t)len) || srv_prepare_images(b->s, sl->j, &sl->j->err))
      sl->j->state = JOB_DONE, sl->j->refs = 1; /* answered with its error in its turn */
    else
      pending[n_pending++] = sl->j;
  }
  if (!rc && ferror(in)) snprintf(err, err_cap, "cannot read the input"), rc = -1;
  submit(b, pending, &n_pending);
  for (; n_in; n_in--, head = (head + 1) % w)
    if (finish(b, &slots[head]) && !rc) snprintf(err, err_cap, "cannot write the output"), rc = -1;
  if (rc && !err[0]) snprintf(err, err_cap, "cannot write the output");
  free(text), free(slots), free(pending);
  return rc;
}

int qvl_batch_run(qvl_engine *e, qvl_tokenizer *t, const qvl_server_params *p, FILE *in, FILE *out, FILE *progress,
                  qvl_batch_stats *st, char *err, size_t err_cap) {
  batch b = {.out = out, .progress = progress};
  memset(st, 0, sizeof *st);
  err[0] = '\0';
  if (!(b.s = calloc(1, sizeof *b.s))) return snprintf(err, err_cap, "out of memory"), -1;
  if (srv_init(b.s, e, t, p, err, err_cap)) return free(b.s), -1;
  b.tty = progress && isatty(fileno(progress));
  b.total = count_lines(in);
  b.t0 = b.t_shown = srv_now();
  int rc = run(&b, in, err, err_cap);
  if (!rc && fflush(out)) snprintf(err, err_cap, "cannot write the output"), rc = -1;
  srv_fini(b.s); /* the scheduler has stopped: its metrics are final */
  b.st.steps = (int64_t)b.s->m.steps, b.st.step_tokens = (int64_t)b.s->m.step_tokens;
  b.st.preemptions = (int64_t)b.s->m.preemptions, b.st.vision_images = (int64_t)b.s->m.vision_images;
  b.st.encoder_cache_hits = (int64_t)b.s->m.enc.hits, b.st.prefix_hit_tokens = (int64_t)b.s->m.prefix_hit_tokens;
  free(b.s);
  b.st.seconds = srv_now() - b.t0;
  show_progress(&b, 1);
  if (progress) {
    double dt = b.st.seconds > 0 ? b.st.seconds : 1e-9;
    fprintf(progress,
            "qvl batch: %lld lines (%lld ok, %lld failed) in %.2f s: %.2f requests/s, %.2f images/s, "
            "%.1f prompt tokens/s, %.1f generated tokens/s\n",
            (long long)b.st.lines, (long long)b.st.ok, (long long)b.st.failed, b.st.seconds, (double)b.st.ok / dt,
            (double)b.st.images / dt, (double)b.st.prompt_tokens / dt, (double)b.st.gen_tokens / dt);
  }
  *st = b.st;
  return rc;
}
