/* lm.c - the text decoders, through the backend op table (lm.h has the diagram). */
#include "models/lm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/mrope.h"

typedef struct lm_run {
  qvl_backend *b;
  const qvl_config *c;
  int64_t n;
  void *h, *x, *q, *k, *v, *att, *g, *u;
  float *cos, *sin;
  int32_t *idx, *vis_idx;
  void *vis;
  int64_t n_vis;
} lm_run;

static void lm_free(lm_run *r) {
  void *all[] = {r->h, r->x, r->q, r->k, r->v, r->att, r->g, r->u, r->cos, r->sin, r->idx, r->vis_idx, r->vis};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) r->b->free(r->b, all[i]);
}

static int lm_alloc(lm_run *r) {
  const qvl_text_config *t = &r->c->text;
  qvl_backend *b = r->b;
  int64_t n = r->n, e = (int64_t)b->elem_bytes, H = t->hidden, qd = (int64_t)t->heads * t->head_dim;
  int64_t kvd = (int64_t)t->kv_heads * t->head_dim, wide = t->intermediate > t->vocab ? t->intermediate : t->vocab;
  int rc;
  if ((rc = b->alloc(b, &r->h, (size_t)(n * H * e))) || (rc = b->alloc(b, &r->x, (size_t)(n * H * e))) ||
      (rc = b->alloc(b, &r->q, (size_t)(n * qd * e))) || (rc = b->alloc(b, &r->k, (size_t)(n * kvd * e))) ||
      (rc = b->alloc(b, &r->v, (size_t)(n * kvd * e))) || (rc = b->alloc(b, &r->att, (size_t)(n * qd * e))) ||
      (rc = b->alloc(b, &r->g, (size_t)(n * wide * e))) || (rc = b->alloc(b, &r->u, (size_t)(n * wide * e))) ||
      (rc = b->alloc(b, (void **)&r->cos, (size_t)(n * t->head_dim) * 4)) ||
      (rc = b->alloc(b, (void **)&r->sin, (size_t)(n * t->head_dim) * 4)) ||
      (rc = b->alloc(b, (void **)&r->idx, (size_t)n * 4)) || (rc = b->alloc(b, (void **)&r->vis_idx, (size_t)n * 4)) ||
      (rc = b->alloc(b, &r->vis, (size_t)((r->n_vis ? r->n_vis : 1) * H * e))))
    return rc;
  return QVL_OK;
}

/* Token embeddings with the vision rows written over the image pad positions (spec §4.6). */
static int lm_embed(lm_run *r, const qvl_weights *w, const lm_input *in, const int32_t *vis_pos) {
  qvl_backend *b = r->b;
  int64_t H = r->c->text.hidden;
  int rc = b->upload(b, r->idx, in->ids, (size_t)r->n * 4);
  if (!rc) rc = b->gather_rows(b, r->h, w->embed, r->idx, r->n, H);
  if (!rc && r->n_vis) rc = b->upload(b, r->vis_idx, vis_pos, (size_t)r->n_vis * 4);
  if (!rc && r->n_vis) rc = b->upload_f32(b, r->vis, in->vision, r->n_vis * H);
  if (!rc && r->n_vis) rc = b->scatter_rows(b, r->h, r->vis, r->vis_idx, r->n_vis, H, 0);
  return rc;
}

static int lm_attention(lm_run *r, const lm_layer *L) {
  const qvl_text_config *t = &r->c->text;
  qvl_backend *b = r->b;
  int64_t n = r->n, H = t->hidden, qd = (int64_t)t->heads * t->head_dim, kvd = (int64_t)t->kv_heads * t->head_dim;
  int hd = t->head_dim, rc;
  if ((rc = b->rmsnorm(b, r->x, r->h, L->in_norm_w, n, (int)H, t->rms_eps)) ||
      (rc = b->linear(b, r->q, r->x, L->q_w, L->q_b, n, (int)qd, (int)H, QVL_EPI_NONE)) ||
      (rc = b->linear(b, r->k, r->x, L->k_w, L->k_b, n, (int)kvd, (int)H, QVL_EPI_NONE)) ||
      (rc = b->linear(b, r->v, r->x, L->v_w, L->v_b, n, (int)kvd, (int)H, QVL_EPI_NONE)))
    return rc;
  if (L->q_norm_w && ((rc = b->rmsnorm(b, r->q, r->q, L->q_norm_w, n * t->heads, hd, t->rms_eps)) ||
                      (rc = b->rmsnorm(b, r->k, r->k, L->k_norm_w, n * t->kv_heads, hd, t->rms_eps))))
    return rc;
  if ((rc = b->rope_heads(b, r->q, r->cos, r->sin, n, t->heads, hd, qd)) ||
      (rc = b->rope_heads(b, r->k, r->cos, r->sin, n, t->kv_heads, hd, kvd)) ||
      (rc = b->attention_causal(b, r->att, r->q, r->k, r->v, n, t->heads, t->kv_heads, hd, 1.0f / sqrtf((float)hd))))
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

static int lm_layers(lm_run *r, const qvl_weights *w, const lm_input *in) {
  qvl_backend *b = r->b;
  int64_t H = r->c->text.hidden;
  int rc;
  for (int l = 0; l < r->c->text.layers; l++) {
    if ((rc = lm_attention(r, &w->lm[l])) || (rc = lm_mlp(r, &w->lm[l]))) return rc;
    if (l < in->n_deepstack && r->n_vis) { /* Qwen3-VL DeepStack: after the whole layer (spec §3.7) */
      if ((rc = b->upload_f32(b, r->vis, in->deepstack[l], r->n_vis * H)) ||
          (rc = b->scatter_rows(b, r->h, r->vis, r->vis_idx, r->n_vis, H, 1)))
        return rc;
    }
  }
  return QVL_OK;
}

int qvl_lm_prefill(qvl_backend *b, const qvl_config *cfg, const qvl_weights *w, const lm_input *in, float *logits,
                   qvl_err *err) {
  const qvl_text_config *t = &cfg->text;
  if (!b->rope_heads || !b->attention_causal || !b->scatter_rows)
    return qvl_fail(err, QVL_ERR_UNSUPPORTED, "language model: the %s backend has no language-model ops yet", b->name);
  if (!w->embed || !w->lm_head) return qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: weights not loaded");
  lm_run r = {b, cfg, in->n, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0};
  int32_t *vis_pos = malloc((size_t)in->n * sizeof(int32_t));
  float *cos = malloc((size_t)in->n * t->head_dim * sizeof(float)), *sin = malloc((size_t)in->n * t->head_dim * sizeof(float));
  int rc = vis_pos && cos && sin ? QVL_OK : qvl_fail(err, QVL_ERR_NOMEM, "language model: out of memory");
  for (int i = 0; !rc && i < in->n; i++) {
    if (in->ids[i] < 0 || in->ids[i] >= t->vocab)
      rc = qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: token %d has id %d outside the vocabulary (%d)", i,
                    in->ids[i], t->vocab);
    else if (in->ids[i] == cfg->image_token_id)
      vis_pos[r.n_vis++] = i;
  }
  if (!rc && r.n_vis && !in->vision)
    rc = qvl_fail(err, QVL_ERR_INVALID_ARG, "language model: %lld image pad tokens but no vision rows", (long long)r.n_vis);
  if (!rc) qvl_mrope_tables(cos, sin, in->pos, in->n, t);
  if (!rc && !(rc = lm_alloc(&r)) && !(rc = b->upload(b, r.cos, cos, (size_t)in->n * t->head_dim * 4)) &&
      !(rc = b->upload(b, r.sin, sin, (size_t)in->n * t->head_dim * 4)) && !(rc = lm_embed(&r, w, in, vis_pos)) &&
      !(rc = lm_layers(&r, w, in)) && !(rc = b->rmsnorm(b, r.x, r.h, w->final_norm, r.n, t->hidden, t->rms_eps)) &&
      !(rc = b->linear(b, r.g, r.x, w->lm_head, NULL, r.n, t->vocab, t->hidden, QVL_EPI_NONE)))
    rc = b->download_f32(b, logits, r.g, r.n * t->vocab);
  lm_free(&r);
  free(vis_pos), free(cos), free(sin);
  return rc;
}
