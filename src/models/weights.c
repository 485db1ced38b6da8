/* weights.c - expands an architecture's name table into concrete tensor specs (names, shapes, slots). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"

static int64_t dim_value(const qvl_config *c, qvl_dim d) {
  const qvl_vision_config *v = &c->vision;
  const qvl_text_config *t = &c->text;
  switch (d) {
    case X_VD: return v->hidden;
    case X_VF: return v->intermediate;
    case X_V3D: return 3 * (int64_t)v->hidden;
    case X_V4D: return (int64_t)v->merge * v->merge * v->hidden;
    case X_VOUT: return v->out_hidden;
    case X_VC: return v->in_channels;
    case X_VT: return v->temporal_patch;
    case X_VP: return v->patch;
    case X_NPOS: return v->num_position_embeddings;
    case X_TD: return t->hidden;
    case X_TF: return t->intermediate;
    case X_VOCAB: return t->vocab;
    case X_QD: return (int64_t)t->heads * t->head_dim;
    case X_KVD: return (int64_t)t->kv_heads * t->head_dim;
    case X_HD: return t->head_dim;
    case X_FUSE_Q: return (int64_t)t->heads * t->head_dim;
    case X_FUSE_K:
    case X_FUSE_V: return (int64_t)t->kv_heads * t->head_dim;
    case X_FUSE_GATE:
    case X_FUSE_UP: return t->intermediate;
    case X_FUSE_VGATE:
    case X_FUSE_VUP: return v->intermediate;
    case X_NONE: break;
  }
  return 0;
}

static int scope_count(const qvl_config *c, qvl_scope s) {
  switch (s) {
    case SCOPE_VIT_LAYER: return c->vision.depth;
    case SCOPE_DEEPSTACK: return c->vision.n_deepstack;
    case SCOPE_LM_LAYER: return c->text.layers;
    default: return 1;
  }
}

static char *scope_base(qvl_weights *w, qvl_scope s, int i) {
  switch (s) {
    case SCOPE_VIT_LAYER: return (char *)&w->vit[i];
    case SCOPE_DEEPSTACK: return (char *)&w->deepstack[i];
    case SCOPE_LM_LAYER: return (char *)&w->lm[i];
    default: return (char *)w;
  }
}

/* A fused part's first row in its buffer and the buffer's rows; 0 and the tensor's own rows otherwise. The vision
 * MLP's parts are bound at vit_ffn rows each. */
static void fuse_rows(const qvl_config *c, int64_t vit_ffn, qvl_dim d, int64_t rows, int64_t *first, int64_t *total) {
  int64_t qd = dim_value(c, X_FUSE_Q), kvd = dim_value(c, X_FUSE_K), ffn = dim_value(c, X_FUSE_GATE);
  *first = d == X_FUSE_K ? qd : d == X_FUSE_V ? qd + kvd : d == X_FUSE_UP ? ffn : d == X_FUSE_VUP ? vit_ffn : 0;
  *total = d == X_FUSE_Q || d == X_FUSE_K || d == X_FUSE_V ? qd + 2 * kvd
           : d == X_FUSE_GATE || d == X_FUSE_UP        ? 2 * ffn
           : d == X_FUSE_VGATE || d == X_FUSE_VUP      ? 2 * vit_ffn
                                                       : rows;
}

static void make_spec(qvl_tensor_spec *s, const qvl_tensor_rule *r, const qvl_config *c, qvl_weights *w, int i) {
  snprintf(s->name, sizeof s->name, r->name, i);
  s->ndim = 0;
  s->numel = s->bound_numel = 1;
  for (int d = 0; d < 5 && r->shape[d] != X_NONE; d++) {
    s->shape[s->ndim] = dim_value(c, r->shape[d]);
    int vf = r->shape[d] == X_VF || r->shape[d] == X_FUSE_VGATE || r->shape[d] == X_FUSE_VUP;
    s->bound_shape[s->ndim] = vf ? w->vit_ffn : s->shape[s->ndim];
    s->numel *= s->shape[s->ndim];
    s->bound_numel *= s->bound_shape[s->ndim++];
  }
  s->part = (r->scope == SCOPE_TEXT || r->scope == SCOPE_LM_LAYER) ? PART_TEXT : PART_VISION;
  s->slot = (void **)(scope_base(w, r->scope, i) + r->offset);
  int64_t first, total, row = s->bound_numel / s->bound_shape[0];
  fuse_rows(c, w->vit_ffn, r->shape[0], s->bound_shape[0], &first, &total);
  s->slot_offset = first * row, s->slot_numel = total * row;
}

int qvl_model_specs(const qvl_config *cfg, int ffn_align, qvl_weights *w, qvl_tensor_spec **specs, int *n,
                    qvl_err *err) {
  int n_rules = 0, total = 0, k = 0;
  const qvl_tensor_rule *rules =
      cfg->arch == QVL_ARCH_QWEN2_5_VL ? qwen2_5_vl_rules(&n_rules) : qwen3_vl_rules(&n_rules);
  memset(w, 0, sizeof *w);
  w->vit_ffn = (cfg->vision.intermediate + ffn_align - 1) / ffn_align * ffn_align;
  *specs = NULL;
  *n = 0;
  w->vit = calloc((size_t)cfg->vision.depth, sizeof *w->vit);
  w->deepstack = calloc((size_t)cfg->vision.n_deepstack + 1, sizeof *w->deepstack);
  w->lm = calloc((size_t)cfg->text.layers, sizeof *w->lm);
  for (int r = 0; r < n_rules; r++) total += scope_count(cfg, rules[r].scope);
  *specs = calloc((size_t)total, sizeof **specs);
  if (!w->vit || !w->deepstack || !w->lm || !*specs) {
    free(*specs);
    *specs = NULL;
    return qvl_fail(err, QVL_ERR_NOMEM, "cannot allocate the weight table");
  }
  for (int r = 0; r < n_rules; r++) {
    if (rules[r].offset == offsetof(qvl_weights, lm_head) && rules[r].scope == SCOPE_TEXT &&
        cfg->text.tie_embeddings)
      continue; /* tied: lm_head is the embedding, absent from the checkpoint */
    for (int i = 0; i < scope_count(cfg, rules[r].scope); i++) make_spec(&(*specs)[k++], &rules[r], cfg, w, i);
  }
  *n = k;
  return QVL_OK;
}

void qvl_spec_pad(const qvl_tensor_spec *s, float *dst, const float *src) {
  int64_t rows = s->ndim == 2 ? s->shape[0] : 1, cols = s->shape[s->ndim - 1];
  int64_t brows = s->ndim == 2 ? s->bound_shape[0] : 1, bcols = s->bound_shape[s->ndim - 1];
  memset(dst, 0, (size_t)s->bound_numel * sizeof(float));
  for (int64_t r = 0; r < rows && r < brows; r++) memcpy(dst + r * bcols, src + r * cols, (size_t)cols * sizeof(float));
}

void qvl_weights_free(qvl_weights *w, qvl_backend *b) {
  (void)b; /* buffers are owned by the engine's weight arena (qvl.c) */
  free(w->vit);
  free(w->deepstack);
  free(w->lm);
  memset(w, 0, sizeof *w);
}
