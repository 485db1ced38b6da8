/* qwen2_5_vl.c - Qwen2.5-VL: checkpoint names and the vision tower (spec §2).
 *
 *   pixels [N, K=1176] -> patch embed (GEMM, no bias) [N, D=1280]
 *   -> window reorder (groups of 4 patches by window_index)
 *   -> depth x { h += proj(attn(rope(qkv(rmsnorm1(h))))) ; h += down(silu(gate(x)) * up(x)), x = rmsnorm2(h) }
 *      attention over 8x8-patch windows (cu_window_seqlens), except fullatt_block_indexes (7, 15, 23, 31)
 *      over whole images / temporal slices (cu_seqlens)
 *   -> merger: rmsnorm(ln_q) per patch, view [N/4, 4D], fc 4D->4D, gelu(erf), fc 4D->O
 *   -> reverse reorder (argsort(window_index)) -> one row per <|image_pad|>
 */
#include <stdlib.h>
#include <string.h>

#include "models/model.h"
#include "models/vision_index.h"
#include "models/vision_run.h"

#define L(f) offsetof(vit_layer, f)
#define M(f) offsetof(qvl_weights, merger) + offsetof(vit_merger, f)
#define T(f) offsetof(lm_layer, f)
#define W(f) offsetof(qvl_weights, f)

static const qvl_tensor_rule RULES[] = {
  /* scope           HF tensor name                              field            shape */
  {SCOPE_VISION,    "visual.patch_embed.proj.weight",           W(patch_w),      {X_VD, X_VC, X_VT, X_VP, X_VP}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.norm1.weight",            L(norm1_w),      {X_VD}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.norm2.weight",            L(norm2_w),      {X_VD}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.attn.qkv.weight",         L(qkv_w),        {X_V3D, X_VD}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.attn.qkv.bias",           L(qkv_b),        {X_V3D}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.attn.proj.weight",        L(proj_w),       {X_VD, X_VD}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.attn.proj.bias",          L(proj_b),       {X_VD}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.mlp.gate_proj.weight",    L(fc1_w),        {X_VF, X_VD}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.mlp.gate_proj.bias",      L(fc1_b),        {X_VF}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.mlp.up_proj.weight",      L(up_w),         {X_VF, X_VD}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.mlp.up_proj.bias",        L(up_b),         {X_VF}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.mlp.down_proj.weight",    L(fc2_w),        {X_VD, X_VF}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.mlp.down_proj.bias",      L(fc2_b),        {X_VD}},
  {SCOPE_VISION,    "visual.merger.ln_q.weight",                M(norm_w),       {X_VD}},
  {SCOPE_VISION,    "visual.merger.mlp.0.weight",               M(fc1_w),        {X_V4D, X_V4D}},
  {SCOPE_VISION,    "visual.merger.mlp.0.bias",                 M(fc1_b),        {X_V4D}},
  {SCOPE_VISION,    "visual.merger.mlp.2.weight",               M(fc2_w),        {X_VOUT, X_V4D}},
  {SCOPE_VISION,    "visual.merger.mlp.2.bias",                 M(fc2_b),        {X_VOUT}},
  {SCOPE_TEXT,      "model.embed_tokens.weight",                W(embed),        {X_VOCAB, X_TD}},
  {SCOPE_LM_LAYER,  "model.layers.%d.input_layernorm.weight",   T(in_norm_w),    {X_TD}},
  {SCOPE_LM_LAYER,  "model.layers.%d.self_attn.q_proj.weight",  T(qkv_w),        {X_FUSE_Q, X_TD}},
  {SCOPE_LM_LAYER,  "model.layers.%d.self_attn.q_proj.bias",    T(qkv_b),        {X_FUSE_Q}},
  {SCOPE_LM_LAYER,  "model.layers.%d.self_attn.k_proj.weight",  T(qkv_w),        {X_FUSE_K, X_TD}},
  {SCOPE_LM_LAYER,  "model.layers.%d.self_attn.k_proj.bias",    T(qkv_b),        {X_FUSE_K}},
  {SCOPE_LM_LAYER,  "model.layers.%d.self_attn.v_proj.weight",  T(qkv_w),        {X_FUSE_V, X_TD}},
  {SCOPE_LM_LAYER,  "model.layers.%d.self_attn.v_proj.bias",    T(qkv_b),        {X_FUSE_V}},
  {SCOPE_LM_LAYER,  "model.layers.%d.self_attn.o_proj.weight",  T(o_w),          {X_TD, X_QD}},
  {SCOPE_LM_LAYER,  "model.layers.%d.post_attention_layernorm.weight", T(post_norm_w), {X_TD}},
  {SCOPE_LM_LAYER,  "model.layers.%d.mlp.gate_proj.weight",     T(gate_up_w),    {X_FUSE_GATE, X_TD}},
  {SCOPE_LM_LAYER,  "model.layers.%d.mlp.up_proj.weight",       T(gate_up_w),    {X_FUSE_UP, X_TD}},
  {SCOPE_LM_LAYER,  "model.layers.%d.mlp.down_proj.weight",     T(down_w),       {X_TD, X_TF}},
  {SCOPE_TEXT,      "model.norm.weight",                        W(final_norm),   {X_TD}},
  {SCOPE_TEXT,      "lm_head.weight",                           W(lm_head),      {X_VOCAB, X_TD}},
};

const qvl_tensor_rule *qwen2_5_vl_rules(int *n_rules) {
  *n_rules = (int)(sizeof RULES / sizeof RULES[0]);
  return RULES;
}

/* Host-side indices of one batch: window order, its inverse, sequence boundaries, rotary positions. */
typedef struct q25_index {
  int32_t *window_index, *reverse, *patch_order, *cu_win, *cu_full, *pos;
  int n_win, n_full;
} q25_index;

static void q25_index_free(q25_index *x) {
  free(x->window_index), free(x->reverse), free(x->patch_order), free(x->cu_win), free(x->cu_full);
  free(x->pos);
}

static int q25_index_build(q25_index *x, const qvl_vision_config *v, const int32_t *grid, int n_img, int64_t rows,
                           qvl_err *err) {
  int unit = v->merge * v->merge, win = v->window_size / v->merge / v->patch;
  int64_t groups = rows / unit;
  memset(x, 0, sizeof *x);
  x->window_index = malloc((size_t)groups * sizeof(int32_t));
  x->reverse = malloc((size_t)groups * sizeof(int32_t));
  x->patch_order = malloc((size_t)rows * sizeof(int32_t));
  x->cu_win = malloc((size_t)(vis_count_windows(grid, n_img, v->merge, win) + 1) * sizeof(int32_t));
  x->cu_full = malloc((size_t)(vis_count_seqs(grid, n_img) + 1) * sizeof(int32_t));
  x->pos = malloc((size_t)rows * 2 * sizeof(int32_t));
  if (!x->window_index || !x->reverse || !x->patch_order || !x->cu_win || !x->cu_full || !x->pos) {
    q25_index_free(x);
    return qvl_fail(err, QVL_ERR_NOMEM, "qwen2.5-vl: cannot allocate indices for %lld patches", (long long)rows);
  }
  x->n_win = vis_window_index(x->window_index, x->cu_win, grid, n_img, v->merge, win);
  x->n_full = vis_cu_seqlens(x->cu_full, grid, n_img);
  vis_invert(x->reverse, x->window_index, groups);
  for (int64_t r = 0; r < rows; r++) x->patch_order[r] = x->window_index[r / unit] * unit + (int32_t)(r % unit);
  vis_rot_pos(x->pos, grid, n_img, v->merge);
  return QVL_OK;
}

static int is_fullatt(const qvl_vision_config *v, int layer) {
  for (int i = 0; i < v->n_fullatt; i++)
    if (v->fullatt[i] == layer) return 1;
  return 0;
}

/* One block, pre-norm residual (spec §2.5). */
static int q25_block(vis_run *r, const vit_layer *L, const int32_t *cu, int n_seq) {
  const qvl_vision_config *v = r->v;
  qvl_backend *b = r->b;
  int64_t N = r->rows;
  int D = v->hidden, F = r->ffn_width, rc;
  if ((rc = b->rmsnorm(b, r->x, r->h, L->norm1_w, N, D, v->norm_eps)) ||
      (rc = b->linear(b, r->qkv, r->x, L->qkv_w, L->qkv_b, N, 3 * D, D, QVL_EPI_NONE)) ||
      (rc = b->rope_qk(b, r->qkv, r->cos, r->sin, N, v->heads, v->head_dim)) ||
      (rc = b->attention(b, r->x, r->qkv, cu, n_seq, v->heads, v->head_dim, vis_attn_scale(v))) ||
      (rc = b->linear(b, r->h, r->x, L->proj_w, L->proj_b, N, D, D, QVL_EPI_RESIDUAL)) ||
      (rc = b->rmsnorm(b, r->x, r->h, L->norm2_w, N, D, v->norm_eps)) ||
      (rc = b->linear(b, r->ffn, r->x, L->fc1_w, L->fc1_b, N, F, D, QVL_EPI_NONE)) ||
      (rc = b->linear(b, r->ffn2, r->x, L->up_w, L->up_b, N, F, D, QVL_EPI_NONE)) ||
      (rc = b->silu_mul(b, r->ffn, r->ffn, r->ffn2, N * F)) ||
      (rc = b->linear(b, r->h, r->ffn, L->fc2_w, L->fc2_b, N, D, F, QVL_EPI_RESIDUAL)))
    return rc;
  return QVL_OK;
}

static int q25_forward(vis_run *r, const qvl_weights *w, const q25_index *x, const vis_input *in, qvl_tap_fn tap,
                       void *ud) {
  const qvl_vision_config *v = r->v;
  qvl_backend *b = r->b;
  int64_t N = r->rows, G = N / 4;
  int D = v->hidden, rc;
  const void *px;
  if ((rc = vis_pixels(r, in, &px)) || (rc = b->linear(b, r->x, px, w->patch_w, NULL, N, D, r->k, QVL_EPI_NONE)) ||
      (rc = b->upload(b, r->idx, x->window_index, (size_t)G * sizeof(int32_t))) ||
      (rc = b->gather_rows(b, r->h, r->x, r->idx, G, 4 * (int64_t)D)))
    return rc;
  if (tap) tap(ud, "patch_embed", r->x, N, D);
  for (int l = 0; l < v->depth; l++) {
    int full = is_fullatt(v, l);
    if ((rc = q25_block(r, &w->vit[l], full ? x->cu_full : x->cu_win, full ? x->n_full : x->n_win))) return rc;
    if (tap) vis_tap_block(tap, ud, l, r->h, N, D);
  }
  if ((rc = vis_merger(r, &w->merger, 0, r->h, r->out_dev[1])) ||
      (rc = b->upload(b, r->idx, x->reverse, (size_t)G * sizeof(int32_t))))
    return rc;
  return b->gather_rows(b, r->out_dev[0], r->out_dev[1], r->idx, G, v->out_hidden);
}

int qwen2_5_vl_vision(qvl_backend *b, const qvl_config *cfg, const qvl_weights *w, const vis_input *in,
                      qvl_vision_out *out, qvl_tap_fn tap, void *ud, qvl_err *err) {
  const qvl_vision_config *v = &cfg->vision;
  vis_run r;
  q25_index x;
  int rc = vis_run_begin(&r, b, v, w->vit_ffn, in, 2, err);
  if (rc) return rc;
  if ((rc = q25_index_build(&x, v, in->grid, in->n, r.rows, err))) {
    vis_run_end(&r);
    return rc;
  }
  rc = vis_run_rope(&r, x.pos, x.patch_order); /* the tables follow the window reorder of the tokens */
  if (!rc) rc = q25_forward(&r, w, &x, in, tap, ud);
  if (!rc) rc = vis_run_collect(&r, out, 1);
  q25_index_free(&x);
  vis_run_end(&r);
  return rc;
}
