/* sched.c - the scheduler: the one thread that owns the engine, the tokenizer, the KV pool and the caches.
 *
 *   queue (HTTP threads: parse, plan the images) -> admit: chat template, M-RoPE positions, sampler, detokenizer
 *   -> vision: the admitted requests' images preprocessed in one call on the engine (pixel rows on the device on
 *      CUDA), each image's rows from the encoder cache, the tower once over the images it lacks; the features stay
 *      in the engine's buffers, where each prefill chunk's rows are read in place
 *   -> step: one token for every decoding sequence and prefill chunks of the others under the token budget, one
 *      lm_step; blocks short: the newest sequence is preempted (its blocks freed, re-prefilled later). The step is
 *      queued first (lm_step_begin) and admission and vision run while the device works on it (their tower queued
 *      behind it), so the device does not wait for the host's decoding, hashing and planning between steps
 *   -> sample, detokenize, stop strings, publish; finished, failed and cancelled sequences leave, freeing blocks.
 *
 * Continuous batching: a request joins the running batch at the next step and leaves it when it ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/mrope.h"
#include "qvl_internal.h"
#include "runtime/prefix_cache.h"
#include "runtime/sampler.h"
#include "server/srv_state.h"

/* One admitted request. toks holds the prompt then the generated tokens; the KV cache holds toks[0, kv.len). */
struct seq {
  job *j;
  int32_t *toks;
  int n_ids, n_toks, made; /* prompt length; prompt + generated; generated */
  int target;              /* prefill up to here before decoding: n_ids, or n_toks - 1 after a preemption */
  int32_t *pos;            /* [3][n_ids] M-RoPE positions of the prompt */
  int64_t delta;           /* generated token t is at position t + delta on all three axes */
  int n_img;
  int32_t *grid;                         /* [n_img][3] */
  uint8_t (*hash)[QVL_IMAGE_HASH_BYTES]; /* [n_img] content digests: prefix and encoder cache keys */
  qvl_vision_out vis;                    /* the images' rows in the engine's buffers (vis.dev), kept for re-prefills */
  int vis_ready;
  int64_t pads_done; /* image pad tokens in toks[0, kv.len) */
  lm_seq kv;
  uint8_t (*keys)[PC_KEY_BYTES]; /* prefix cache keys of the prompt's full blocks */
  int n_keys, n_cached;          /* those; the first n_cached are in the cache (shared or inserted) */
  qvl_sampler *sm;
  float *logits; /* [vocab], host sampling */
  int32_t next;  /* the device's argmax */
  int device_pick;
  qvl_detok *d;
  qvl_stopper *stop;
  int hit;
  int want_share; /* start on the prefix cache before the next plan (admitted, or preempted since) */
  double t_prefill, t_first, t_last;
};

typedef struct step {
  lm_chunk *c;      /* [max_running] */
  struct seq **who; /* the chunk's sequence */
  int *len;         /* its tokens */
  int64_t *pads;    /* its image pads */
  int32_t *pos;     /* [3][step_tokens + max_running] all chunks' positions */
  const void **ds;  /* [max_running][QVL_MAX_LIST] the chunks' DeepStack rows (the engine's buffers) */
  int n;
} step;

struct sched {
  lm_model *lm;     /* the engine's, with the server's KV pool */
  enc_cache *enc;   /* NULL when off */
  prefix_cache *pc; /* NULL when off */
  struct seq **run; /* admitted, oldest first */
  int n_run;
  step st;
  double last_end;  /* when the previous step's outputs were taken; 0 after an iteration without a step */
};

/* ---- publishing ------------------------------------------------------------------------------------ */

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

/* Status for an engine/tokenizer failure: the request's fault (400) or ours (500). */
static int http_status(int rc) {
  return rc == QVL_ERR_INVALID_ARG || rc == QVL_ERR_FORMAT || rc == QVL_ERR_LIMIT || rc == QVL_ERR_UNSUPPORTED ? 400
                                                                                                               : 500;
}

static void fail_job(job *j, int rc, const char *msg) { /* under s->mu */
  int st = http_status(rc);
  srv_errorf(&j->err, st, st == 400 ? "invalid_request_error" : "server_error", NULL, qvl_status_name(rc), "%s", msg);
}

/* The job's end: DONE, its waiters woken, the scheduler's reference dropped. Under s->mu. */
static void end_job(qvl_server *s, job *j) {
  if (!j->err.status && !j->cancel && j->n_gen) srv_observe(&s->m.e2e, srv_now() - j->t_queued);
  j->state = JOB_DONE;
  pthread_cond_broadcast(&j->cv);
  srv_job_release(s, j);
}

static void seq_free(qvl_server *s, struct seq *q) {
  if (!q) return;
  lm_seq_free(s->sc->lm, &q->kv);
  qvl_sampler_close(q->sm);
  qvl_detok_close(q->d);
  qvl_stopper_close(q->stop);
  qvl_vision_out_free(&q->vis);
  free(q->toks), free(q->pos), free(q->grid), free(q->hash), free(q->logits), free(q->keys);
  free(q);
}

static void kv_metrics(qvl_server *s) { /* under s->mu */
  s->m.kv_blocks_used = lm_blocks_total(s->sc->lm) - lm_blocks_free(s->sc->lm);
  s->m.prefix_blocks = pc_blocks(s->sc->pc);
}

/* Takes sequence i out of the running list (order kept: preemption picks the newest) and ends its job. */
static void retire(qvl_server *s, int i) {
  struct seq *q = s->sc->run[i];
  job *j = q->j;
  memmove(s->sc->run + i, s->sc->run + i + 1, (size_t)(s->sc->n_run - i - 1) * sizeof *s->sc->run);
  s->sc->n_run--;
  seq_free(s, q); /* its blocks back first: /metrics never shows a request gone and its blocks still held */
  pthread_mutex_lock(&s->mu);
  s->running = s->sc->n_run;
  kv_metrics(s);
  end_job(s, j);
  pthread_mutex_unlock(&s->mu);
}

/* The detokenizer's tail through the stop strings, then what they held back unless one matched; finish reason. */
static void flush_text(qvl_server *s, struct seq *q) {
  const char *piece = "", *tail = "", *held = "";
  size_t n_piece = 0, len = 0, n_held = 0;
  qvl_detok_flush(q->d, &piece, &n_piece);
  if (!q->hit) qvl_stopper_push(q->stop, piece, n_piece, &tail, &len, &q->hit);
  if (!q->hit) qvl_stopper_flush(q->stop, &held, &n_held);
  int stopped = q->hit;
  for (int i = 0; i < q->j->s.n_stop; i++) stopped |= q->toks[q->n_toks - 1] == q->j->s.stop_ids[i];
  pthread_mutex_lock(&s->mu);
  append_text(q->j, tail, len);
  append_text(q->j, held, n_held);
  q->j->finish = stopped ? "stop" : "length";
  srv_observe(&s->m.stage[STAGE_DECODE], srv_now() - q->t_first);
  pthread_mutex_unlock(&s->mu);
}

/* A new token for q: accepted, detokenized, published. Returns 1 when q is finished. */
static int emit_token(qvl_server *s, struct seq *q, int32_t id) {
  const char *piece = "", *text = "";
  size_t n = 0, len = 0;
  qvl_sampler_accept(q->sm, id);
  q->toks[q->n_toks++] = id, q->made++;
  qvl_detok_push(q->d, id, &piece, &n);
  qvl_stopper_push(q->stop, piece, n, &text, &len, &q->hit);
  int stop = q->hit || q->made == q->j->s.max_tokens;
  for (int i = 0; i < q->j->s.n_stop; i++) stop |= id == q->j->s.stop_ids[i];
  double now = srv_now();
  pthread_mutex_lock(&s->mu);
  job *j = q->j;
  stop |= append_text(j, text, len) != 0;
  if (j->n_gen++ == 0) {
    j->started = 1, q->t_first = now;
    srv_observe(&s->m.ttft, now - j->t_queued);
    srv_observe(&s->m.stage[STAGE_PREFILL], now - q->t_prefill);
  } else {
    srv_observe(&s->m.tpot, now - q->t_last);
  }
  q->t_last = now;
  s->m.gen_tokens++;
  srv_count(&s->m.gen_rate, now, 1);
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&s->mu);
  return stop;
}

static int is_pad(const qvl_config *c, int32_t id) {
  return id == c->image_token_id || id == c->video_token_id;
}

/* ---- prefix cache ------------------------------------------------------------------------------------------ */

/* The keys of q's full prompt blocks, each image's hash folded in at its first pad (the k-th run of pads is image k).
 */
static int prefix_keys(qvl_server *s, struct seq *q) {
  const qvl_config *c = qvl_engine_config(s->e);
  q->n_keys = q->n_ids / LM_BLOCK;
  const uint8_t **fold = calloc((size_t)q->n_ids + 1, sizeof *fold);
  q->keys = malloc(((size_t)q->n_keys + 1) * sizeof *q->keys);
  if (!fold || !q->keys) return free(fold), QVL_ERR_NOMEM;
  for (int t = 0, k = 0; t < q->n_ids; t++)
    if (is_pad(c, q->toks[t]) && (t == 0 || !is_pad(c, q->toks[t - 1])) && k < q->n_img) fold[t] = q->hash[k++];
  pc_keys(q->keys, q->toks, q->n_keys * LM_BLOCK, fold);
  free(fold);
  return QVL_OK;
}

/* An empty q starts on the longest cached run of its prompt blocks, short of its last token (whose logits it needs). */
static void share_prefix(qvl_server *s, struct seq *q) {
  const qvl_config *c = qvl_engine_config(s->e);
  int max = (q->target - 1) / LM_BLOCK, k = 0;
  if (max > q->n_keys) max = q->n_keys;
  int32_t *blocks = max > 0 ? malloc((size_t)max * sizeof *blocks) : NULL;
  if (blocks && (k = pc_lookup(s->sc->pc, (const uint8_t(*)[PC_KEY_BYTES])q->keys, max, blocks)) &&
      lm_seq_share(s->sc->lm, &q->kv, blocks, k))
    k = 0;
  free(blocks);
  q->n_cached = k;
  for (int t = 0; t < q->kv.len; t++) q->pads_done += is_pad(c, q->toks[t]);
  pthread_mutex_lock(&s->mu);
  s->m.prefix_hit_tokens += (uint64_t)q->kv.len, s->m.prefix_query_tokens += (uint64_t)q->n_ids;
  pthread_mutex_unlock(&s->mu);
}

/* After a step: q's prompt blocks that became full go into the cache. */
static void cache_blocks(qvl_server *s, struct seq *q) {
  int full = (q->kv.len < q->n_ids ? q->kv.len : q->n_ids) / LM_BLOCK;
  for (; q->n_cached < full && q->n_cached < q->n_keys; q->n_cached++)
    if (pc_insert(s->sc->pc, q->keys[q->n_cached], q->kv.blocks[q->n_cached])) break;
}

/* ---- admission ---------------------------------------------------------------------------------------- */

/* Chat template over the job's messages (grids from its preprocessed images), M-RoPE positions, the sampler and
 * the text stream; refused here: a prompt over the context or over the whole KV pool. NULL with j->err set. */
static struct seq *admit(qvl_server *s, job *j) {
  const qvl_config *c = qvl_engine_config(s->e);
  qvl_err *err = qvl_engine_err(s->e);
  struct seq *q = calloc(1, sizeof *q);
  const int32_t *ids;
  size_t n = 0;
  int rc = q ? QVL_OK : QVL_ERR_NOMEM;
  const char *msg = "out of memory";
  if (!rc &&
      (rc = qvl_chat_encode(
           s->t, &(qvl_chat){.kind = s->tmpl, .messages = j->msgs, .n_messages = j->n_msgs, .add_generation_prompt = 1},
           &ids, &n)))
    msg = qvl_tokenizer_errmsg(s->t);
  const qvl_sampling *sp = &j->s;
  if (!rc && (int64_t)n + sp->max_tokens > c->text.max_position) {
    rc = QVL_ERR_LIMIT;
    snprintf(err->msg, sizeof err->msg, "generate: %zu prompt tokens + %d new exceed the context of %d", n,
             sp->max_tokens, c->text.max_position);
    msg = err->msg;
  }
  int64_t need = ((int64_t)n + sp->max_tokens + LM_BLOCK - 1) / LM_BLOCK;
  if (!rc && need > lm_blocks_total(s->sc->lm)) {
    rc = QVL_ERR_LIMIT;
    snprintf(err->msg, sizeof err->msg,
             "generate: %zu prompt tokens + %d new need %lld tokens of KV cache; this server has %lld "
             "(qvl serve --kv-cache-tokens)",
             n, sp->max_tokens, (long long)need * LM_BLOCK, (long long)lm_blocks_total(s->sc->lm) * LM_BLOCK);
    msg = err->msg;
  }
  if (!rc) {
    q->j = j, q->n_ids = (int)n, q->n_toks = (int)n, q->target = (int)n, q->n_img = j->n_images;
    q->toks = malloc(((size_t)n + (size_t)sp->max_tokens) * sizeof *q->toks);
    q->pos = malloc(n * 3 * sizeof *q->pos);
    q->grid = malloc(((size_t)q->n_img + 1) * 3 * sizeof *q->grid);
    q->logits = malloc((size_t)c->text.vocab * sizeof *q->logits);
    if (!q->toks || !q->pos || !q->grid || !q->logits || lm_seq_init(&q->kv, (int)n + sp->max_tokens) ||
        qvl_sampler_open(&q->sm, c->text.vocab, sp) || qvl_detok_open(&q->d, s->t, 1) ||
        qvl_stopper_open(&q->stop, sp->stop, sp->n_stop_strings))
      rc = QVL_ERR_NOMEM;
  }
  if (!rc) {
    memcpy(q->toks, ids, n * sizeof *ids);
    for (int i = 0, k = 0; i < j->n_parts; i++) /* the submitting thread planned them */
      if (j->parts[i].kind == QVL_PART_IMAGE) memcpy(q->grid + 3 * k++, j->parts[i].grid_thw, 3 * sizeof *q->grid);
    qvl_sampler_prompt(q->sm, q->toks, q->n_ids);
    q->device_pick = sp->temperature <= 0 && (sp->repetition_penalty == 1 || sp->repetition_penalty == 0) &&
                     sp->presence_penalty == 0 && sp->frequency_penalty == 0;
    q->vis_ready = !q->n_img;
    if ((rc = qvl_rope_index(q->pos, &q->delta, q->toks, q->n_ids, c, q->grid, q->n_img, NULL, err))) msg = err->msg;
  }
  if (!rc && s->sc->pc && !q->n_img && (rc = prefix_keys(s, q))) msg = "out of memory"; /* with images: vision */
  q->want_share = !rc && s->sc->pc; /* at the next plan: the blocks of sequences admitted with it may be cached */
  pthread_mutex_lock(&s->mu);
  if (rc) {
    fail_job(j, rc, msg);
  } else {
    j->n_prompt = q->n_ids;
    s->m.prompt_tokens += (uint64_t)q->n_ids, s->m.images += (uint64_t)q->n_img;
    srv_count(&s->m.prompt_rate, srv_now(), q->n_ids);
    srv_count(&s->m.image_rate, srv_now(), q->n_img);
  }
  pthread_mutex_unlock(&s->mu);
  if (rc) seq_free(s, q), q = NULL;
  return q;
}

/* Moves queued jobs into the running list (up to max_running); cancelled ones end here. */
static void admit_waiting(qvl_server *s) {
  for (;;) {
    pthread_mutex_lock(&s->mu);
    job *j = s->sc->n_run < s->p.max_running ? s->head : NULL;
    if (j) {
      s->head = j->next;
      if (!s->head) s->tail = NULL;
      s->n_waiting--;
      j->state = JOB_RUNNING;
      srv_observe(&s->m.queue, srv_now() - j->t_queued);
      if (j->cancel) end_job(s, j), j = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (!j) {
      pthread_mutex_lock(&s->mu);
      int more = s->head && s->sc->n_run < s->p.max_running;
      pthread_mutex_unlock(&s->mu);
      if (more) continue;
      return;
    }
    struct seq *q = admit(s, j);
    pthread_mutex_lock(&s->mu);
    if (!q) end_job(s, j);
    pthread_mutex_unlock(&s->mu);
    if (!q) continue;
    s->sc->run[s->sc->n_run++] = q;
    q->t_prefill = srv_now();
    pthread_mutex_lock(&s->mu);
    s->running = s->sc->n_run;
    pthread_mutex_unlock(&s->mu);
  }
}

/* ---- vision ----------------------------------------------------------------------------------------------- */

/* Rows per image at the merger's output. */
static int64_t image_rows(const struct seq *q, int i, int m2) {
  return (int64_t)q->grid[3 * i] * q->grid[3 * i + 1] * q->grid[3 * i + 2] / m2;
}

/* Row r of a [rows][cols] buffer of be. */
static void *row_at(const qvl_backend *be, const void *buf, int64_t r, int64_t cols) {
  return (char *)buf + (size_t)(r * cols) * be->elem_bytes;
}

static void fail_seq(qvl_server *s, struct seq *q, int rc, const char *msg) {
  pthread_mutex_lock(&s->mu);
  if (!q->j->err.status) fail_job(q->j, rc, msg);
  pthread_mutex_unlock(&s->mu);
}

/* One pass encodes the images of the sequences that need them, as many as fit VISION_PATCHES and VISION_IMAGES (at
 * least one sequence): their pixels made in one preprocessing call on the engine per distinct image params (the GPU
 * path on CUDA: one nvJPEG batch, rows left on the device), each image's rows from the encoder cache, else from one
 * tower call over all the missing images, features left in the engine's buffers for the language model. Failures
 * end the sequence's own job. */
enum { VISION_PATCHES = 65536, VISION_IMAGES = 128 }; /* within the engine's plan: 262144 patches, 256 images */

typedef struct vseq {
  struct seq *q;
  qvl_image_batch *b; /* its pixels: images first .. first + n_img of b, from pixel row row0 */
  int first;
  int64_t row0;
  int tried;  /* preprocessed, or failed */
  int missed; /* waits for the tower */
} vseq;

/* Sequences of this pass in admission order; the total of their images in *n_img. */
static int pick(qvl_server *s, vseq *vs, int *n_img) {
  int n = 0;
  int64_t patches = 0;
  *n_img = 0;
  for (int r = 0; r < s->sc->n_run; r++) {
    struct seq *q = s->sc->run[r];
    int64_t p = 0;
    if (q->vis_ready || q->j->err.status) continue;
    for (int i = 0; i < q->n_img; i++) p += (int64_t)q->grid[3 * i] * q->grid[3 * i + 1] * q->grid[3 * i + 2];
    if (n && (patches + p > VISION_PATCHES || *n_img + q->n_img > VISION_IMAGES)) break;
    vs[n++] = (vseq){.q = q}, patches += p, *n_img += q->n_img;
  }
  return n;
}

/* One qvl_preprocess_images call on the engine (the scheduler thread owns its stream and its error). */
static int preprocess_call(qvl_server *s, const qvl_image *imgs, int n, const qvl_image_params *ip,
                           qvl_image_batch **out) {
  qvl_image_params p = *ip;
  p.n_threads = 0, p.host_rows = 0; /* every core for the CPU path's images; the GPU path on a CUDA engine */
  double t0 = srv_now();
  int rc = qvl_preprocess_images(s->e, imgs, n, &p, out);
  pthread_mutex_lock(&s->mu);
  if (!rc) srv_observe(&s->m.stage[STAGE_PREPROCESS], srv_now() - t0);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

/* v's pixels are b's images from first on. */
static void take_batch(vseq *v, qvl_image_batch *b, int first) {
  const int32_t *g = qvl_image_batch_pixels(b)->grid_thw;
  v->b = b, v->first = first, v->row0 = 0, v->tried = 1;
  for (int i = 0; i < first; i++) v->row0 += (int64_t)g[3 * i] * g[3 * i + 1] * g[3 * i + 2];
}

static int same_params(const qvl_image_params *a, const qvl_image_params *b) {
  return a->semantics == b->semantics && a->min_pixels == b->min_pixels && a->max_pixels == b->max_pixels &&
         a->max_input_pixels == b->max_input_pixels;
}

/* vs[k]'s images and those of every later untried sequence with the same image params, in one call. A failed call
 * is made again request by request, so a bad image (caught only by decoding) fails its own request, with the
 * message it would get alone ("image 1: ..."), and not the others. New batches go to bs[*n_bs]. */
static void preprocess_group(qvl_server *s, vseq *vs, int n, int k, qvl_image *imgs, qvl_image_batch **bs, int *n_bs) {
  const qvl_image_params *ip = &vs[k].q->j->ip;
  int n_img = 0, members = 0;
  for (int i = k; i < n; i++) {
    job *j = vs[i].q->j;
    if (vs[i].tried || !same_params(ip, &j->ip)) continue;
    memcpy(imgs + n_img, j->images, (size_t)j->n_images * sizeof *imgs);
    n_img += j->n_images, members++;
  }
  qvl_image_batch *b = NULL;
  int rc = preprocess_call(s, imgs, n_img, ip, &b), first = 0;
  if (!rc) bs[(*n_bs)++] = b;
  for (int i = k; i < n; i++) {
    job *j = vs[i].q->j;
    if (vs[i].tried || !same_params(ip, &j->ip)) continue;
    if (!rc) {
      take_batch(&vs[i], b, first), first += j->n_images;
      continue;
    }
    qvl_image_batch *own = NULL;
    int own_rc = members == 1 ? rc : preprocess_call(s, j->images, j->n_images, &j->ip, &own);
    vs[i].tried = 1;
    if (own_rc)
      fail_seq(s, vs[i].q, own_rc, qvl_errmsg(s->e));
    else
      take_batch(&vs[i], own, 0), bs[(*n_bs)++] = own;
  }
}

/* q's buffers for its images' rows, on the engine's backend: [rows][out_hidden] per output (DeepStack too). */
static int alloc_vis(qvl_server *s, struct seq *q) {
  const qvl_config *c = qvl_engine_config(s->e);
  qvl_backend *be = qvl_engine_backend(s->e);
  int m2 = c->vision.merge * c->vision.merge;
  q->vis.n = 1 + c->vision.n_deepstack, q->vis.cols = c->vision.out_hidden, q->vis.rows = 0, q->vis.be = be;
  for (int i = 0; i < q->n_img; i++) q->vis.rows += image_rows(q, i, m2);
  for (int k = 0; k < q->vis.n; k++) {
    int rc = be->alloc(be, &q->vis.dev[k], (size_t)(q->vis.rows * q->vis.cols) * be->elem_bytes);
    if (rc) return rc;
  }
  return QVL_OK;
}

/* v's image digests (the prefix and encoder cache keys: on the GPU path each is one download of the resized pixels),
 * its prefix keys and its row buffers. */
static int seq_ready(qvl_server *s, vseq *v) {
  struct seq *q = v->q;
  if (!(q->hash = malloc((size_t)q->n_img * sizeof *q->hash))) return QVL_ERR_NOMEM;
  for (int i = 0; i < q->n_img; i++) {
    const uint8_t *h = qvl_image_batch_hash(v->b, v->first + i);
    if (!h) return QVL_ERR_DEVICE;
    memcpy(q->hash[i], h, QVL_IMAGE_HASH_BYTES);
  }
  int rc = s->sc->pc ? prefix_keys(s, q) : QVL_OK;
  return rc ? rc : alloc_vis(s, q);
}

/* Image i's rows from the cache into q's rows at first: 1, 0 when the cache lacks them, or the copy's error. */
static int from_cache(qvl_server *s, struct seq *q, int i, int64_t first, int64_t rows) {
  enc_entry en;
  if (!s->sc->enc || !enc_cache_get(s->sc->enc, q->hash[i], &en) || en.rows != rows || en.cols != q->vis.cols ||
      en.n_out != q->vis.n)
    return 0;
  qvl_backend *be = q->vis.be;
  for (int k = 0; k < q->vis.n; k++) {
    int rc = be->copy(be, row_at(be, q->vis.dev[k], first, q->vis.cols), en.data[k],
                      (size_t)(rows * q->vis.cols) * be->elem_bytes);
    if (rc) return rc;
  }
  return 1;
}

typedef struct miss {
  vseq *v;
  int img;
  int64_t first, rows, prow; /* vision rows at first in q->vis; pixel rows from prow in v->b */
} miss;

/* The missing images' pixel rows gathered into one buffer of the engine's backend (buffer copies of the GPU path's
 * bf16 rows; the CPU path's host rows uploaded), then the tower once over them with its features left there. */
static int tower(qvl_server *s, const miss *ms, int n, int64_t patches, qvl_vision_out *out) {
  qvl_backend *be = qvl_engine_backend(s->e);
  const qvl_config *c = qvl_engine_config(s->e);
  int64_t row_len, m2 = c->vision.merge * c->vision.merge;
  qvl_image_batch_rows(ms[0].v->b, &row_len);
  size_t row_bytes = (size_t)row_len * be->elem_bytes;
  int32_t *grid = malloc((size_t)n * 3 * sizeof *grid);
  void *pix = NULL;
  int rc = grid ? be->alloc(be, &pix, (size_t)patches * row_bytes) : QVL_ERR_NOMEM;
  for (int k = 0, at = 0; !rc && k < n; k++) {
    const qvl_pixels *px = qvl_image_batch_pixels(ms[k].v->b);
    int64_t np = ms[k].rows * m2;
    char *dst = (char *)pix + (size_t)at * row_bytes;
    memcpy(grid + 3 * k, px->grid_thw + 3 * (ms[k].v->first + ms[k].img), 3 * sizeof *grid);
    rc = px->dev_rows
             ? be->copy(be, dst, (const char *)px->dev_rows + (size_t)ms[k].prow * row_bytes, (size_t)np * row_bytes)
             : be->upload_f32(be, dst, px->rows + ms[k].prow * row_len, np * row_len);
    at += (int)np;
  }
  double t0 = srv_now();
  vis_input in = {grid, n, NULL, pix, 0, 1};
  if (!rc) rc = qvl_engine_vision_input(s->e, &in, out, NULL, NULL);
  pthread_mutex_lock(&s->mu);
  if (!rc) srv_observe(&s->m.stage[STAGE_VISION], srv_now() - t0), s->m.vision_images += (uint64_t)n;
  pthread_mutex_unlock(&s->mu);
  be->free(be, pix);
  free(grid);
  return rc;
}

/* The tower's rows of each missing image into its sequence's rows, and into the encoder cache. */
static int spread(qvl_server *s, const miss *ms, int n, const qvl_vision_out *out) {
  qvl_backend *be = out->be;
  for (int k = 0, from = 0; k < n; from += (int)ms[k].rows, k++) {
    struct seq *q = ms[k].v->q;
    const void *src[1 + QVL_MAX_LIST];
    for (int l = 0; l < q->vis.n; l++) {
      src[l] = row_at(be, out->dev[l], from, q->vis.cols);
      int rc = be->copy(be, row_at(be, q->vis.dev[l], ms[k].first, q->vis.cols), src[l],
                        (size_t)(ms[k].rows * q->vis.cols) * be->elem_bytes);
      if (rc) return rc;
    }
    if (s->sc->enc) enc_cache_put(s->sc->enc, q->hash[ms[k].img], q->vis.n, ms[k].rows, q->vis.cols, src);
  }
  return QVL_OK;
}

/* Each image of the preprocessed sequences from the cache or into the list for the tower, then the tower. */
static void encode(qvl_server *s, vseq *vs, int n, miss *ms) {
  const qvl_config *c = qvl_engine_config(s->e);
  int m2 = c->vision.merge * c->vision.merge, n_miss = 0;
  int64_t patches = 0;
  for (int k = 0; k < n; k++) {
    struct seq *q = vs[k].q;
    int mark = n_miss, rc = QVL_OK;
    int64_t first = 0, prow = vs[k].row0, np = 0;
    if (!vs[k].b || q->j->err.status) continue;
    if ((rc = seq_ready(s, &vs[k]))) {
      fail_seq(s, q, rc, rc == QVL_ERR_NOMEM ? "out of memory" : qvl_errmsg(s->e));
      continue;
    }
    for (int i = 0; !rc && i < q->n_img; i++) {
      int64_t rows = image_rows(q, i, m2);
      int hit = from_cache(s, q, i, first, rows);
      if (hit < 0)
        rc = hit;
      else if (!hit)
        ms[n_miss++] = (miss){&vs[k], i, first, rows, prow}, np += rows * m2;
      first += rows, prow += rows * m2;
    }
    if (rc)
      n_miss = mark, fail_seq(s, q, rc, qvl_errmsg(s->e));
    else
      patches += np, vs[k].missed = n_miss > mark;
  }
  qvl_vision_out out = {0};
  int rc = n_miss ? tower(s, ms, n_miss, patches, &out) : QVL_OK;
  if (!rc && n_miss) rc = spread(s, ms, n_miss, &out);
  qvl_vision_out_free(&out);
  const char *msg = rc == QVL_ERR_NOMEM ? "out of memory" : qvl_errmsg(s->e);
  for (int k = 0; k < n; k++) {
    struct seq *q = vs[k].q;
    if (rc && vs[k].missed) fail_seq(s, q, rc, msg);
    q->vis_ready = vs[k].b && !q->j->err.status;
  }
}

static void vision(qvl_server *s) {
  int n_img = 0, n_bs = 0;
  vseq *vs = calloc((size_t)s->sc->n_run + 1, sizeof *vs);
  int n = vs ? pick(s, vs, &n_img) : 0;
  qvl_image *imgs = n ? malloc((size_t)n_img * sizeof *imgs) : NULL;
  qvl_image_batch **bs = n ? calloc((size_t)n, sizeof *bs) : NULL;
  miss *ms = n ? malloc((size_t)n_img * sizeof *ms) : NULL;
  if (n && (!imgs || !bs || !ms)) n = 0; /* tried again next iteration */
  for (int k = 0; k < n; k++)
    if (!vs[k].tried) preprocess_group(s, vs, n, k, imgs, bs, &n_bs);
  encode(s, vs, n, ms);
  pthread_mutex_lock(&s->mu);
  if (s->sc->enc) s->m.enc = enc_cache_get_stats(s->sc->enc);
  pthread_mutex_unlock(&s->mu);
  for (int k = 0; k < n; k++) { /* encoded or failed: the request's image bytes are not needed again */
    job *j = vs[k].q->j;
    for (int i = 0; i < j->n_images; i++) free(j->image_bytes[i]), j->image_bytes[i] = NULL, j->images[i].data = NULL;
  }
  for (int k = 0; k < n_bs; k++) qvl_image_batch_free(bs[k]);
  free(vs), free(imgs), free(bs), free(ms);
}

/* ---- the step ------------------------------------------------------------------------------------------- */

/* Frees q's blocks and sends it back to prefill: the prompt and every generated token but the last are recomputed,
 * then decoding goes on from the last (its logits were already used). It starts on the prefix cache again (its own
 * blocks may have stayed there) only at the next plan: re-sharing at once would hand it back the cached blocks it
 * just released, so a plan that preempts for blocks would find it holding blocks again and pick it forever. Any
 * blocks it released that only the cache holds now are reclaimed for the plan. */
static void preempt(qvl_server *s, struct seq *q, int want) {
  lm_seq_free(s->sc->lm, &q->kv);
  lm_seq_init(&q->kv, q->n_ids + q->j->s.max_tokens);
  q->target = q->made ? q->n_toks - 1 : q->n_ids;
  q->pads_done = 0, q->n_cached = 0;
  q->want_share = s->sc->pc != NULL;
  pthread_mutex_lock(&s->mu);
  s->m.preemptions++;
  pthread_mutex_unlock(&s->mu);
  if (s->sc->pc) pc_reclaim(s->sc->pc, want);
}

/* Fails q's job for a step it can never get (the pool cannot hold it next to what it must keep) and frees its blocks
 * at once; retired after the step. Never reached while admission refuses what the pool cannot hold alone. */
static void fail_stuck(qvl_server *s, struct seq *q, const char *what, int need) {
  lm_seq_free(s->sc->lm, &q->kv);
  lm_seq_init(&q->kv, q->n_ids + q->j->s.max_tokens);
  char msg[256];
  snprintf(msg, sizeof msg,
           "generate: no KV cache blocks for this request's %s (%d more needed, %d of %d free, %d held by the prefix "
           "cache; qvl serve --kv-cache-tokens)",
           what, need, lm_blocks_free(s->sc->lm), lm_blocks_total(s->sc->lm), pc_blocks(s->sc->pc));
  pthread_mutex_lock(&s->mu);
  fail_job(q->j, QVL_ERR_LIMIT, msg);
  pthread_mutex_unlock(&s->mu);
}

/* The newest sequence other than keep that holds blocks (its own or shared), or NULL. */
static struct seq *newest_holder(struct sched *sc, const struct seq *keep) {
  for (int r = sc->n_run - 1; r >= 0; r--)
    if (sc->run[r] != keep && sc->run[r]->kv.n_blocks && !sc->run[r]->j->err.status) return sc->run[r];
  return NULL;
}

/* Chunk i of the step: q's next len tokens from kv.len, their positions, the rows of their image pads; outputs
 * (logits or the device's argmax) only when the chunk ends at q's last token (a re-prefill ends one short). */
static void make_chunk(const qvl_config *c, step *st, int i, int32_t *pos3) {
  struct seq *q = st->who[i];
  lm_chunk *k = &st->c[i];
  int n = st->len[i], at = q->kv.len;
  memset(k, 0, sizeof *k);
  k->seq = &q->kv, k->ids = q->toks + at, k->n = n, k->pos = pos3;
  k->n_generated = at + n > q->n_ids ? at + n - (at > q->n_ids ? at : q->n_ids) : 0; /* a re-prefill's or decode's */
  int64_t pads = 0;
  for (int t = 0; t < n; t++) {
    int g = at + t;
    for (int a = 0; a < 3; a++) pos3[a * n + t] = g < q->n_ids ? q->pos[a * q->n_ids + g] : (int32_t)(g + q->delta);
    pads += g < q->n_ids && is_pad(c, q->toks[g]);
  }
  st->pads[i] = pads;
  if (pads) { /* read in place from q's buffers */
    const void **ds = st->ds + (size_t)i * QVL_MAX_LIST;
    k->vision_dev = row_at(q->vis.be, q->vis.dev[0], q->pads_done, q->vis.cols);
    for (int l = 0; l + 1 < q->vis.n; l++) ds[l] = row_at(q->vis.be, q->vis.dev[1 + l], q->pads_done, q->vis.cols);
    k->deepstack_dev = q->vis.n > 1 ? ds : NULL, k->n_deepstack = q->vis.n - 1;
  }
  if (at + n == q->n_toks) {
    if (q->device_pick)
      k->argmax = &q->next;
    else
      k->logits = q->logits;
  }
}

/* Plans the step: every decoding sequence's token, then prefill chunks in admission order while the token budget
 * and the free blocks last (whole blocks, older sequences first). Blocks short for the decodes alone: the newest
 * sequence holding blocks is preempted and the plan starts over. No decodes and the oldest prefill that could run
 * gets no block: the newest other holder is preempted the same way. Every preemption takes one holder's blocks
 * (a preempted sequence holds none until the next plan), so the plan ends; a sequence that still cannot get its
 * blocks with nobody else holding any fails with a clear error instead of waiting forever. */
static void plan(qvl_server *s, step *st) {
  const qvl_config *c = qvl_engine_config(s->e);
  int rows;
  for (int r = 0; s->sc->pc && r < s->sc->n_run; r++) { /* sequences admitted or preempted since the last plan */
    struct seq *q = s->sc->run[r];
    if (!q->vis_ready) continue; /* its keys come with its images' digests */
    if (q->want_share && !q->kv.len && !q->kv.n_blocks && !q->j->err.status) share_prefix(s, q);
    q->want_share = 0;
  }
  if (s->sc->pc) { /* cached blocks no sequence reads come back first, as far as this step can use them */
    int want = 0, left = s->p.step_tokens;
    for (int r = 0; r < s->sc->n_run; r++) {
      struct seq *q = s->sc->run[r];
      int n = q->kv.len < q->target ? q->target - q->kv.len : 1;
      if (q->kv.len < q->target && (!q->vis_ready || left <= 0)) continue;
      if (n > left) n = left;
      want += lm_seq_blocks_needed(&q->kv, n), left -= n;
    }
    pc_reclaim(s->sc->pc, want);
  }
  for (;;) {
    int free_blocks = lm_blocks_free(s->sc->lm), need = 0;
    st->n = rows = 0;
    for (int r = 0; r < s->sc->n_run; r++) {
      struct seq *q = s->sc->run[r];
      if (q->kv.len < q->target || q->j->err.status) continue; /* prefilling, or failed */
      need += lm_seq_blocks_needed(&q->kv, 1);
      st->who[st->n] = q, st->len[st->n++] = 1, rows++;
    }
    if (need > free_blocks) {
      struct seq *victim = newest_holder(s->sc, NULL);
      if (victim) {
        preempt(s, victim, need);
      } else { /* nobody left to preempt: the newest decoding sequence cannot go on */
        for (int i = st->n - 1; i >= 0 && !victim; i--) victim = st->who[i];
        fail_stuck(s, victim, "next token", need - free_blocks);
      }
      continue;
    }
    struct seq *first = NULL; /* the oldest prefill that could run */
    for (int r = 0; r < s->sc->n_run && rows < s->p.step_tokens; r++) {
      struct seq *q = s->sc->run[r];
      if (q->kv.len >= q->target || !q->vis_ready || q->j->err.status) continue;
      if (!first) first = q;
      int n = q->target - q->kv.len;
      if (n > s->p.step_tokens - rows) n = s->p.step_tokens - rows;
      while (n > 0 && need + lm_seq_blocks_needed(&q->kv, n) > free_blocks)
        n = n > LM_BLOCK ? (n - 1) / LM_BLOCK * LM_BLOCK : 0; /* fewer whole blocks */
      if (n <= 0) break;
      need += lm_seq_blocks_needed(&q->kv, n);
      st->who[st->n] = q, st->len[st->n++] = n, rows += n;
    }
    if (st->n || !first) break; /* a step, or nothing that could run (images still to encode) */
    int t = first->target - first->kv.len, want;
    if (t > LM_BLOCK) t = LM_BLOCK;
    if (t > s->p.step_tokens) t = s->p.step_tokens;
    if ((want = lm_seq_blocks_needed(&first->kv, t)) < 1) want = 1; /* what it was refused: blocks for t tokens */
    struct seq *victim = newest_holder(s->sc, first);
    if (victim)
      preempt(s, victim, want);
    else if (!s->sc->pc || !pc_reclaim(s->sc->pc, want))
      fail_stuck(s, first, "prefill", want - lm_blocks_free(s->sc->lm));
  }
  for (int i = 0, at = 0; i < st->n; at += 3 * st->len[i], i++) make_chunk(c, st, i, st->pos + at);
}

/* After a successful step: the cache grew; chunks with an output give their sequence its next token. */
static void after_step(qvl_server *s, step *st) {
  for (int i = 0; i < st->n; i++) {
    struct seq *q = st->who[i];
    q->pads_done += st->pads[i];
    if (s->sc->pc) cache_blocks(s, q);
    if (!st->c[i].argmax && !st->c[i].logits) continue;
    int32_t id = st->c[i].argmax ? q->next : qvl_sampler_pick(q->sm, q->logits);
    int cancel;
    pthread_mutex_lock(&s->mu);
    cancel = q->j->cancel || s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (emit_token(s, q, id) || cancel) q->target = -1; /* done: retired below */
  }
}

/* One iteration: a step is planned and queued on the device, then, while it runs, new requests are admitted and the
 * waiting sequences' images preprocessed and encoded (their tower queued after the step); the step's outputs are
 * taken once both are done. Sequences that finished, failed or were cancelled leave. */
static void iterate(qvl_server *s, step *st) {
  for (int r = 0; r < s->sc->n_run;) { /* cancelled (the client left) or failed since the last iteration */
    struct seq *q = s->sc->run[r];
    pthread_mutex_lock(&s->mu);
    int gone = q->j->cancel || q->j->err.status;
    pthread_mutex_unlock(&s->mu);
    if (gone)
      retire(s, r);
    else
      r++;
  }
  plan(s, st);
  qvl_err err = {0};
  double t_begin = srv_now();
  int rc = st->n ? lm_step_begin(s->sc->lm, st->c, st->n, &err) : QVL_OK;
  admit_waiting(s);
  vision(s);
  if (st->n) {
    double t_wait = srv_now();
    if (!rc) rc = lm_step_end(s->sc->lm, &err);
    double t_end = srv_now(), dev[3] = {0, 0, 0};
    qvl_backend *be = qvl_engine_backend(s->e);
    if (be->profile && be->profile(be, dev)) dev[0] = dev[1] = dev[2] = 0; /* lost: the counters only miss it */
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < 3; k++) s->m.device_ms[k] += dev[k];
    srv_observe(&s->m.stage[STAGE_STEP], t_end - t_begin);
    srv_observe(&s->m.stage[STAGE_WAIT], t_end - t_wait);
    if (s->sc->last_end > 0) srv_observe(&s->m.stage[STAGE_GAP], t_begin - s->sc->last_end);
    s->m.steps++;
    for (int i = 0; i < st->n; i++) s->m.step_tokens += (uint64_t)st->len[i];
    for (int i = 0; rc && i < st->n; i++) fail_job(st->who[i]->j, rc, err.msg);
    pthread_mutex_unlock(&s->mu);
    if (!rc) after_step(s, st);
    s->sc->last_end = t_end;
  } else {
    s->sc->last_end = 0;
  }
  for (int r = 0; r < s->sc->n_run;) {
    struct seq *q = s->sc->run[r];
    if (q->target == -1) flush_text(s, q);
    if (q->target == -1 || q->j->err.status)
      retire(s, r);
    else
      r++;
  }
  pthread_mutex_lock(&s->mu);
  kv_metrics(s);
  pthread_mutex_unlock(&s->mu);
}

int srv_sched_open(qvl_server *s, char *err, size_t err_cap) {
  struct sched *sc = s->sc = calloc(1, sizeof *sc);
  int cap = s->p.max_running;
  if (!sc) return snprintf(err, err_cap, "out of memory"), -1;
  int64_t blocks = (s->p.kv_tokens + LM_BLOCK - 1) / LM_BLOCK;
  if (qvl_engine_lm(s->e, blocks, &sc->lm))
    return snprintf(err, err_cap, "KV cache of %lld tokens: %s", (long long)s->p.kv_tokens, qvl_errmsg(s->e)), -1;
  if (s->p.encoder_cache_bytes > 0 && enc_cache_open(&sc->enc, qvl_engine_backend(s->e), s->p.encoder_cache_bytes))
    return snprintf(err, err_cap, "out of memory"), -1;
  if (!s->p.no_prefix_cache && pc_open(&sc->pc, sc->lm)) return snprintf(err, err_cap, "out of memory"), -1;
  sc->run = calloc((size_t)cap, sizeof *sc->run);
  sc->st = (step){.c = calloc((size_t)cap, sizeof *sc->st.c),
                  .who = calloc((size_t)cap, sizeof *sc->st.who),
                  .len = calloc((size_t)cap, sizeof *sc->st.len),
                  .pads = calloc((size_t)cap, sizeof *sc->st.pads),
                  .pos = calloc(3 * ((size_t)s->p.step_tokens + (size_t)cap), sizeof *sc->st.pos),
                  .ds = calloc((size_t)cap * QVL_MAX_LIST, sizeof *sc->st.ds)};
  step *st = &sc->st;
  if (!sc->run || !st->c || !st->who || !st->len || !st->pads || !st->pos || !st->ds)
    return snprintf(err, err_cap, "out of memory"), -1;
  s->m.kv_blocks_total = lm_blocks_total(sc->lm);
  /* every row count a vision pass or a step can have gets its GEMM kernels now, and every attention class of a
   * vision pass its kernel, not with requests waiting (and the device idle behind the host while candidates are
   * timed) */
  double t0 = srv_now();
  int n_tuned = 0;
  if (!s->p.no_tune && qvl_engine_tune(s->e, VISION_PATCHES, (int64_t)s->p.step_tokens + cap, &n_tuned))
    return snprintf(err, err_cap, "choosing GEMM kernels: %s", qvl_errmsg(s->e)), -1;
  if (n_tuned)
    fprintf(stderr, "qvl: kernels chosen ahead in %.1f s (GEMMs of %d shapes x row buckets, attention classes)\n",
            srv_now() - t0, n_tuned);
  return 0;
}

void srv_sched_close(qvl_server *s) {
  struct sched *sc = s->sc;
  if (!sc) return;
  enc_cache_close(sc->enc);
  pc_close(sc->pc);
  free(sc->run);
  free(sc->st.c), free(sc->st.who), free(sc->st.len), free(sc->st.pads), free(sc->st.pos), free(sc->st.ds);
  free(sc);
  s->sc = NULL;
}

void *srv_sched_main(void *arg) {
  qvl_server *s = arg;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    while (!s->head && !s->sc->n_run && !s->stopping) pthread_cond_wait(&s->cv, &s->mu);
    int stop = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (stop) break;
    iterate(s, &s->sc->st);
  }
  while (s->sc->n_run) { /* stopping: what runs ends with 503 */
    pthread_mutex_lock(&s->mu);
    srv_errorf(&s->sc->run[s->sc->n_run - 1]->j->err, 503, "server_error", NULL, "shutting_down",
               "the server is shutting down");
    pthread_mutex_unlock(&s->mu);
    retire(s, s->sc->n_run - 1);
  }
  return NULL;
}
