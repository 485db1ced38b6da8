/* lm.c - the text decoders, through the backend op table (lm.h has the diagram). */
#include "models/lm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/mrope.h"

struct lm_seq {
  qvl_backend *b;
  const qvl_config *c;
  int max_ctx, len;
  void **k, **v; /* per layer [max_ctx][kv_heads * head_dim] */
};

/* Buffers of one chunk. */
typedef struct lm_run {
  qvl_backend *b;
  const qvl_config *c;
  lm_seq *s;
  int64_t n, n_vis;
  void *h, *x, *q, *att, *g, *u, *vis;
  float *cos, *sin;
  int32_t *idx, *vis_idx;
} lm_run;

static void *at(const lm_seq *s, void *buf, int64_t row, int64_t width) {
  return (char *)buf + (size_t)(row * width) * s->b->elem_bytes;
}

int lm_seq_open(lm_seq **out, qvl_backend *b, const qvl_config *cfg, int max_ctx, qvl_err *err) {
  const qvl_text_config *t = &cfg->text;
  lm_seq *s = calloc(1, sizeof *s);
  *out = s;
  if (!s) return qvl_fail(err, QVL_ERR_NOMEM, "language model: out of memory");
  s->b = b, s->c = cfg, s->max_ctx = max_ctx;
  s->k = calloc((size_t)t->layers, sizeof *s->k);
  s->v = calloc((size_t)t->layers, sizeof *s->v);
  if (!s->k || !s->v) return qvl_fail(err, QVL_ERR_NOMEM, "language model: out of memory");
  size_t bytes = (size_t)max_ctx * t->kv_heads * t->head_dim * b->elem_bytes;
  for (int l = 0; l < t->layers; l++) {
    int rc = b->alloc(b, &s->k[l], bytes);
    if (!rc) rc = b->alloc(b, &s->v[l], bytes);
    if (rc) return rc;
  }
  return QVL_OK;
}

void lm_seq_close(lm_seq *s) {
  if (!s) return;
  for (int l = 0; s->k && s->v && l < s->c->text.layers; l++) s->b->free(s->b, s->k[l]), s->b->free(s->b, s->v[l]);
  free(s->k), free(s->v), free(s);
}

int lm_seq_len(const lm_seq *s) { return s->len; }

static void run_free(lm_run *r) {
  void *all[] = {r->h, r->x, r->q, r->att, r->g, r->u, r->vis, r->cos, r->sin, r->idx, r->vis_idx};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) r->b->free(r->b, all[i]);
}

static int run_alloc(lm_run *r) {
  const qvl_text_config *t = &r->c->text;
  qvl_backend *b = r->b;
  int64_t n = r->n, e = (int64_t)b->elem_bytes, H = t->hidden, qd = (int64_t)t->heads * t->head_dim;
  int64_t wide = t->intermediate > t->vocab ? t->intermediate : t->vocab;
  int rc;
  if ((rc = b->alloc(b, &r->h, (size_t)(n * H * e))) || (rc = b->alloc(b, &r->x, (size_t)(n * H * e))) ||
      (rc = b->alloc(b, &r->q, (size_t)(n * qd * e))) || (rc = b->alloc(b, &r->att, (size_t)(n * qd * e))) ||
      (rc = b->alloc(b, &r->g, (size_t)(n * wide * e))) || (rc = b->alloc(b, &r->u, (size_t)(n * wide * e))) ||
      (rc = b->alloc(b, &r->vis, (size_t)((r->n_vis ? r->n_vis : 1) * H * e))) ||
      (rc = b->alloc(b, (void **)&r->cos, (size_t)(n * t->head_dim) * 4)) ||
      (rc = b->alloc(b, (void **)&r->sin, (size_t)(n * t->head_dim) * 4)) ||
      (rc = b->alloc(b, (void **)&r->idx, (size_t)n * 4)) || (rc = b->alloc(b, (void **)&r->vis_idx, (size_t)n * 4)))
    return rc;
  return QVL_OK;
}

/* Token embeddings with the vision rows written over the image pad positions (spec §4.6). */
static int lm_embed(lm_run *r, const qvl_weights *w, const lm_chunk *c, const int32_t *vis_pos) {
  qvl_backend *b = r->b;
  int64_t H = r->c->text.hidden;
  int rc = b->upload(b, r->idx, c->ids, (size_t)r->n * 4);
  if (!rc) rc = b->gather_rows(b, r->h, w->embed, r->idx, r->n, H);
  if (!rc && r->n_vis) rc = b->upload(b, r->vis_idx, vis_pos, (size_t)r->n_vis * 4);
  if (!rc && r->n_vis) rc = b->upload_f32(b, r->vis, c->vision, r->n_vis * H);
  if (!rc && r->n_vis) rc = b->scatter_rows(b, r->h, r->vis, r->vis_idx, r->n_vis, H, 0);
  return rc;
}

/* Attention block; the chunk's k and v go straight into the cache rows after the cached ones. */
static int lm_attention(lm_run *r, const lm_layer *L, int l) {
  const qvl_text_config *t = &r->c->text;
  qvl_backend *b = r->b;
  int64_t n = r->n, start = r->s->len, H = t->hidden, qd = (int64_t)t->heads * t->head_dim;
  int64_t kvd = (int64_t)t->kv_heads * t->head_dim;
  void *k = at(r->s, r->s->k[l], start, kvd), *v = at(r->s, r->s->v[l], start, kvd);
  int hd = t->head_dim, rc;
  if ((rc = b->rmsnorm(b, r->x, r->h, L->in_norm_w, n, (int)H, t->rms_eps)) ||
      (rc = b->linear(b, r->q, r->x, L->q_w, L->q_b, n, (int)qd, (int)H, QVL_EPI_NONE)) ||
      (rc = b->linear(b, k, r->x, L->k_w, L->k_b, n, (int)kvd, (int)H, QVL_EPI_NONE)) ||
      (rc = b->linear(b, v, r->x, L->v_w, L->v_b, n, (int)kvd, (int)H, QVL_EPI_NONE)))
    return rc;
  if (L->q_norm_w && ((rc = b->rmsnorm(b, r->q, r->q, L->q_norm_w, n * t->heads, hd, t->rms_eps)) ||
                      (rc = b->rmsnorm(b, k, k, L->k_norm_w, n * t->kv_heads, hd, t->rms_eps))))
    return rc;
  if ((rc = b->rope_heads(b, r->q, r->cos, r->sin, n, t->heads, hd, qd)) ||
      (rc = b->rope_heads(b, k, r->cos, r->sin, n, t->kv_heads, hd, kvd)) ||
      (rc = b->attention_causal(b, r->att, r->q, r->s->k[l], r->s->v[l], n, start + n, t->heads, t->kv_heads, hd,
                                1.0f / sqrtf((float)hd))))
    return rc;
  return b->linear(b, r->h, r->att, L->o_w, NULL, n, (int)H, (int)qd, QVL_EPI_RESIDUAL);
}

static int lm_mlp(lm_run *r, const lm_layer *L) {
  const qvl_text_config *t = &r->c->text;
  qvl_backend *b = r->b;
  int64_t n = r->n;
  int H = t->hidden, I = t->intermediate, rc;
  if ((rc = b->rmsnorm(b, r->x, r->h, L->post_norm_w, n, H, t->rms_eps)) ||
      (rc = b->linear(b, r->g, r->x, L->gate_w, NULL, n, I, H, QVL_EPI_NONE)) ||
      (rc = b->linear(b, r->u, r->x, L->up_w, NULL, n, I, H, QVL_EPI_NONE)) ||
      (rc = b->silu_mul(b, r->g, r->g, r->u, n * I)))
    return rc;
  return b->linear(b, r->h, r->g, L->down_w, NULL, n, H, I, QVL_EPI_RESIDUAL);
}

static int lm_layers(lm_run *r, const qvl_weights *w, const lm_chunk *c) {
  qvl_backend *b = r->b;
  int64_t H = r->c->text.hidden;
  int rc;
  for (int l = 0; l < r->c->text.layers; l++) {
    if ((rc = lm_attention(r, &w->lm[l], l)) || (rc = lm_mlp(r, &w->lm[l]))) return rc;
    if (l < c->n_deepstack && r->n_vis) { /* Qwen3-VL DeepStack: after the whole layer (spec §3.7) */
      if ((rc = b->upload_f32(b, r->vis, c->deepstack[l], r->n_vis * H)) ||
          (rc = b->scatter_rows(b, r->h, r->vis, r->vis_idx, r->n_vis, H, 1)))
        return rc;
    }
  }
  return QVL_OK;
}

/* Final norm and lm_head over every row or only the last. */
static int lm_logits(lm_run *r, const qvl_weights *w, float *logits, int all) {
  const qvl_text_config *t = &r->c->text;
  qvl_backend *b = r->b;
  int64_t rows = all ? r->n : 1, first = all ? 0 : r->n - 1;
  int rc = b->rmsnorm(b, r->x, at(r->s, r->h, first, t->hidden), w->final_norm, rows, t->hidden, t->rms_eps);
  if (!rc) rc = b->linear(b, r->g, r->x, w->lm_head, NULL, rows, t->vocab, t->hidden, QVL_EPI_NONE);
  return rc ? rc : b->download_f32(b, logits, r->g, rows * t->vocab);
}

/* Checks the chunk's ids and lists its image pad positions. */
static int scan_chunk(lm_run *r, const lm_chunk *c, int32_t *vis_pos, qvl_err *err) {
  const qvl_config *cfg = r->c;
  if (r->s->len + c->n > r->s->max_ctx)
    return qvl_fail(err, QVL_ERR_LIMIT, "language model: %d cached + %d new tokens exceed the context of %d",
                    r->s->len, c->n, r->s->max_ctx);
  for (int i = 0; i < c->n; i++) {
    if (c->ids[i] < 0 || c->ids[i] >= cfg->text.vocab)
      return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: token %d has id %d outside the vocabulary (%d)", i,
                      c->ids[i], cfg->text.vocab);
    if (c->ids[i] == cfg->image_token_id) vis_pos[r->n_vis++] = i;
  }
  if (r->n_vis && !c->vision)
    return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: %lld image pad tokens but no vision rows",
                    (long long)r->n_vis);
  return QVL_OK;
}

int lm_seq_forward(lm_seq *s, const qvl_weights *w, const lm_chunk *c, float *logits, int all_logits, qvl_err *err) {
  qvl_backend *b = s->b;
  const qvl_text_config *t = &s->c->text;
  if (!b->rope_heads || !b->attention_causal || !b->scatter_rows)
    return qvl_fail(err, QVL_ERR_UNSUPPORTED, "language model: the %s backend has no language-model ops yet", b->name);
  if (!w->embed || !w->lm_head) return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: weights not loaded");
  if (c->n < 1) return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: empty chunk");
  lm_run r;
  memset(&r, 0, sizeof r);
  r.b = b, r.c = s->c, r.s = s, r.n = c->n;
  int32_t *vis_pos = malloc((size_t)c->n * sizeof(int32_t));
  float *cos = malloc((size_t)c->n * t->head_dim * sizeof(float)), *sin = malloc((size_t)c->n * t->head_dim * sizeof(float));
  int rc = vis_pos && cos && sin ? scan_chunk(&r, c, vis_pos, err) : qvl_fail(err, QVL_ERR_NOMEM, "language model: out of memory");
  if (!rc) qvl_mrope_tables(cos, sin, c->pos, c->n, t);
  if (!rc && !(rc = run_alloc(&r)) && !(rc = b->upload(b, r.cos, cos, (size_t)c->n * t->head_dim * 4)) &&
      !(rc = b->upload(b, r.sin, sin, (size_t)c->n * t->head_dim * 4)) && !(rc = lm_embed(&r, w, c, vis_pos)) &&
      !(rc = lm_layers(&r, w, c)) && !(rc = lm_logits(&r, w, logits, all_logits)))
    s->len += c->n;
  run_free(&r);
  free(vis_pos), free(cos), free(sin);
  return rc;
}
