/* qwen2_5_vl.c - Qwen2.5-VL: checkpoint names and the vision tower (spec §2).
 *
 *   pixels [N, K=1176] -> patch embed (GEMM, no bias) [N, D=1280]
 *   -> window reorder (groups of 4 patches by window_index)
 *   -> depth x { h += proj(attn(rope(qkv(rmsnorm1(h))))) ; h += down(silu(gate(x)) * up(x)), x = rmsnorm2(h) }
 *      (gate and up bound as one [2F, D] GEMM at load)
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
  {SCOPE_VIT_LAYER, "visual.blocks.%d.mlp.gate_proj.weight",    L(fc1_w),        {X_FUSE_VGATE, X_VD}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.mlp.gate_proj.bias",      L(fc1_b),        {X_FUSE_VGATE}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.mlp.up_proj.weight",      L(fc1_w),        {X_FUSE_VUP, X_VD}},
  {SCOPE_VIT_LAYER, "visual.blocks.%d.mlp.up_proj.bias",        L(fc1_b),        {X_FUSE_VUP}},
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

static int is_fullatt(const qvl_vision_config *v, int layer) {
  for (int i = 0; i < v->n_fullatt; i++)
    if (v->fullatt[i] == layer) return 1;
  return 0;
}

/* Host indices of a call (vision_run.h): rotary positions in window order, window order of merge groups and
 * its inverse, window and full-attention boundaries. */
static int q25_index(vis_run *r, const int32_t *grid, int n) {
  const qvl_vision_config *v = r->v;
  int unit = v->merge * v->merge, win = v->window_size / v->merge / v->patch;
  int64_t N = r->rows, G = N / unit;
  int32_t *pos, *order, *widx, *rev, *cu_win, *cu_full;
  r->pos = vis_ix_take(r, 2 * N, &pos);
  r->order = vis_ix_take(r, N, &order);
  r->widx = vis_ix_take(r, G, &widx);
  r->rev = vis_ix_take(r, G, &rev);
  r->cu_dev[1] = vis_ix_take(r, vis_count_windows(grid, n, v->merge, win) + 1, &cu_win);
  r->cu_dev[0] = vis_ix_take(r, vis_count_seqs(grid, n) + 1, &cu_full);
  r->n_seq[1] = vis_window_index(widx, cu_win, grid, n, v->merge, win);
  r->n_seq[0] = vis_cu_seqlens(cu_full, grid, n);
  r->cu[0] = cu_full, r->cu[1] = cu_win, r->n_att = 2;
  vis_invert(rev, widx, G);
  for (int64_t i = 0; i < N; i++) order[i] = widx[i / unit] * unit + (int32_t)(i % unit);
  vis_rot_pos(pos, grid, n, v->merge);
  return QVL_OK;
}

/* One block, pre-norm residual (spec §2.5); the MLP's gate and up are one GEMM (rows stacked at load), fused with
 * the SwiGLU product where the backend can (gate_up.c). */
static int q25_block(vis_run *r, const vit_layer *L, const void *att) {
  const qvl_vision_config *v = r->v;
  qvl_backend *b = r->b;
  int64_t N = r->rows;
  int D = v->hidden, F = r->ffn_width, rc;
  if ((rc = b->rmsnorm(b, r->x, r->h, L->norm1_w, N, D, v->norm_eps)) ||
      (rc = b->linear(b, r->a, r->x, L->qkv_w, L->qkv_b, N, 3 * D, D, QVL_EPI_NONE)) ||
      (rc = b->attention(b, r->x, r->a, att, r->cos, r->sin, vis_attn_scale(v))) ||
      (rc = b->linear(b, r->h, r->x, L->proj_w, L->proj_b, N, D, D, QVL_EPI_RESIDUAL)) ||
      (rc = b->rmsnorm(b, r->x, r->h, L->norm2_w, N, D, v->norm_eps)) ||
      (rc = mlp_gate_up(b, r->a, r->u, r->x, L->fc1_w, L->fc1_b, N, F, D, 1)) ||
      (rc = b->linear(b, r->h, r->a, L->fc2_w, L->fc2_b, N, D, F, QVL_EPI_RESIDUAL)))
    return rc;
  return QVL_OK;
}

/* Patch embedding, window reorder, the blocks, the merger and the reverse reorder (vision_run.h: no uploads). */
static int q25_forward(vis_run *r, const qvl_weights *w, const void *px, qvl_tap_fn tap, void *ud) {
  const qvl_vision_config *v = r->v;
  qvl_backend *b = r->b;
  int unit = v->merge * v->merge;
  int64_t N = r->rows, G = N / unit;
  int D = v->hidden, rc;
  /* the rotary tables follow the window reorder of the tokens */
  if ((rc = b->rope_tables(b, r->cos, r->sin, r->pos, r->order, N, v->head_dim, 10000.0f)) ||
      (rc = b->linear(b, r->x, px, w->patch_w, NULL, N, D, r->k, QVL_EPI_NONE)) ||
      (rc = b->gather_rows(b, r->h, r->x, r->widx, G, (int64_t)unit * D)))
    return rc;
  if (tap) tap(ud, "patch_embed", r->x, N, D);
  for (int l = 0; l < v->depth; l++) {
    if ((rc = q25_block(r, &w->vit[l], r->att[is_fullatt(v, l) ? 0 : 1]))) return rc;
    if (tap) vis_tap_block(tap, ud, l, r->h, N, D);
  }
  if ((rc = vis_merger(r, &w->merger, 0, r->h, r->u, r->a))) return rc;
  return b->gather_rows(b, r->out_dev[0], r->a, r->rev, G, v->out_hidden);
}

static const vis_arch Q25 = {1, q25_index, q25_forward};

int qwen2_5_vl_vision(vis_ws *ws, const qvl_weights *w, const vis_input *in, qvl_vision_out *out, qvl_tap_fn tap,
                      void *ud, qvl_err *err) {
  return vis_run_tower(ws, &Q25, w, in, out, tap, ud, err);
}
