/* qwen3_vl.c - Qwen3-VL: checkpoint names and the vision tower (spec §3).
 *
 *   pixels [N, K=1536] -> patch embed (GEMM + bias) [N, D] -> + bilinear-interpolated learned position
 *   embedding (48x48 table) -> depth x { h += proj(attn(rope(qkv(ln1(h))))) ; h += fc2(gelu_tanh(fc1(ln2(h)))) }
 *      attention per image / temporal slice (cu_seqlens); after block deepstack_visual_indexes[k]:
 *      deepstack_k = DeepStack merger k (view [N/4, 4D], LayerNorm(4D), fc, gelu(erf), fc)
 *   -> merger: LayerNorm(D) per patch, view [N/4, 4D], fc, gelu(erf), fc -> [N/4, O], rows already in
 *      merge-group order (no reorder)
 */
#include <stdlib.h>
#include <string.h>

#include "models/model.h"
#include "models/vision_index.h"
#include "models/vision_run.h"

#define L(f) offsetof(vit_layer, f)
#define M(f) offsetof(qvl_weights, merger) + offsetof(vit_merger, f)
#define DS(f) offsetof(vit_merger, f)
#define T(f) offsetof(lm_layer, f)
#define W(f) offsetof(qvl_weights, f)
#define LM "model.language_model."

static const qvl_tensor_rule RULES[] = {
  /* scope           HF tensor name                                     field          shape */
  {SCOPE_VISION,    "model.visual.patch_embed.proj.weight",            W(patch_w),    {X_VD, X_VC, X_VT, X_VP, X_VP}},
  {SCOPE_VISION,    "model.visual.patch_embed.proj.bias",              W(patch_b),    {X_VD}},
  {SCOPE_VISION,    "model.visual.pos_embed.weight",                   W(pos_embed),  {X_NPOS, X_VD}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.norm1.weight",             L(norm1_w),    {X_VD}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.norm1.bias",               L(norm1_b),    {X_VD}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.norm2.weight",             L(norm2_w),    {X_VD}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.norm2.bias",               L(norm2_b),    {X_VD}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.attn.qkv.weight",          L(qkv_w),      {X_V3D, X_VD}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.attn.qkv.bias",            L(qkv_b),      {X_V3D}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.attn.proj.weight",         L(proj_w),     {X_VD, X_VD}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.attn.proj.bias",           L(proj_b),     {X_VD}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.mlp.linear_fc1.weight",    L(fc1_w),      {X_VF, X_VD}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.mlp.linear_fc1.bias",      L(fc1_b),      {X_VF}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.mlp.linear_fc2.weight",    L(fc2_w),      {X_VD, X_VF}},
  {SCOPE_VIT_LAYER, "model.visual.blocks.%d.mlp.linear_fc2.bias",      L(fc2_b),      {X_VD}},
  {SCOPE_VISION,    "model.visual.merger.norm.weight",                 M(norm_w),     {X_VD}},
  {SCOPE_VISION,    "model.visual.merger.norm.bias",                   M(norm_b),     {X_VD}},
  {SCOPE_VISION,    "model.visual.merger.linear_fc1.weight",           M(fc1_w),      {X_V4D, X_V4D}},
  {SCOPE_VISION,    "model.visual.merger.linear_fc1.bias",             M(fc1_b),      {X_V4D}},
  {SCOPE_VISION,    "model.visual.merger.linear_fc2.weight",           M(fc2_w),      {X_VOUT, X_V4D}},
  {SCOPE_VISION,    "model.visual.merger.linear_fc2.bias",             M(fc2_b),      {X_VOUT}},
  {SCOPE_DEEPSTACK, "model.visual.deepstack_merger_list.%d.norm.weight",       DS(norm_w), {X_V4D}},
  {SCOPE_DEEPSTACK, "model.visual.deepstack_merger_list.%d.norm.bias",         DS(norm_b), {X_V4D}},
  {SCOPE_DEEPSTACK, "model.visual.deepstack_merger_list.%d.linear_fc1.weight", DS(fc1_w),  {X_V4D, X_V4D}},
  {SCOPE_DEEPSTACK, "model.visual.deepstack_merger_list.%d.linear_fc1.bias",   DS(fc1_b),  {X_V4D}},
  {SCOPE_DEEPSTACK, "model.visual.deepstack_merger_list.%d.linear_fc2.weight", DS(fc2_w),  {X_VOUT, X_V4D}},
  {SCOPE_DEEPSTACK, "model.visual.deepstack_merger_list.%d.linear_fc2.bias",   DS(fc2_b),  {X_VOUT}},
  {SCOPE_TEXT,      LM "embed_tokens.weight",                          W(embed),      {X_VOCAB, X_TD}},
  {SCOPE_LM_LAYER,  LM "layers.%d.input_layernorm.weight",             T(in_norm_w),  {X_TD}},
  {SCOPE_LM_LAYER,  LM "layers.%d.self_attn.q_proj.weight",            T(qkv_w),      {X_FUSE_Q, X_TD}},
  {SCOPE_LM_LAYER,  LM "layers.%d.self_attn.k_proj.weight",            T(qkv_w),      {X_FUSE_K, X_TD}},
  {SCOPE_LM_LAYER,  LM "layers.%d.self_attn.v_proj.weight",            T(qkv_w),      {X_FUSE_V, X_TD}},
  {SCOPE_LM_LAYER,  LM "layers.%d.self_attn.o_proj.weight",            T(o_w),        {X_TD, X_QD}},
  {SCOPE_LM_LAYER,  LM "layers.%d.self_attn.q_norm.weight",            T(q_norm_w),   {X_HD}},
  {SCOPE_LM_LAYER,  LM "layers.%d.self_attn.k_norm.weight",            T(k_norm_w),   {X_HD}},
  {SCOPE_LM_LAYER,  LM "layers.%d.post_attention_layernorm.weight",    T(post_norm_w),{X_TD}},
  {SCOPE_LM_LAYER,  LM "layers.%d.mlp.gate_proj.weight",               T(gate_up_w),  {X_FUSE_GATE, X_TD}},
  {SCOPE_LM_LAYER,  LM "layers.%d.mlp.up_proj.weight",                 T(gate_up_w),  {X_FUSE_UP, X_TD}},
  {SCOPE_LM_LAYER,  LM "layers.%d.mlp.down_proj.weight",               T(down_w),     {X_TD, X_TF}},
  {SCOPE_TEXT,      LM "norm.weight",                                  W(final_norm), {X_TD}},
  {SCOPE_TEXT,      "lm_head.weight",                                  W(lm_head),    {X_VOCAB, X_TD}},
};

const qvl_tensor_rule *qwen3_vl_rules(int *n_rules) {
  *n_rules = (int)(sizeof RULES / sizeof RULES[0]);
  return RULES;
}

/* One block, pre-norm residual (spec §3.5). */
static int q3_block(vis_run *r, const vit_layer *L, const void *att) {
  const qvl_vision_config *v = r->v;
  qvl_backend *b = r->b;
  int64_t N = r->rows;
  int D = v->hidden, F = r->ffn_width, rc;
  if ((rc = b->layernorm(b, r->x, r->h, L->norm1_w, L->norm1_b, N, D, v->norm_eps)) ||
      (rc = b->linear(b, r->a, r->x, L->qkv_w, L->qkv_b, N, 3 * D, D, QVL_EPI_NONE)) ||
      (rc = b->attention(b, r->x, r->a, att, r->cos, r->sin, vis_attn_scale(v))) ||
      (rc = b->linear(b, r->h, r->x, L->proj_w, L->proj_b, N, D, D, QVL_EPI_RESIDUAL)) ||
      (rc = b->layernorm(b, r->x, r->h, L->norm2_w, L->norm2_b, N, D, v->norm_eps)) ||
      (rc = b->linear(b, r->a, r->x, L->fc1_w, L->fc1_b, N, F, D, QVL_EPI_GELU_TANH)) ||
      (rc = b->linear(b, r->h, r->a, L->fc2_w, L->fc2_b, N, D, F, QVL_EPI_RESIDUAL)))
    return rc;
  return QVL_OK;
}

static int deepstack_slot(const qvl_vision_config *v, int layer) {
  for (int k = 0; k < v->n_deepstack; k++)
    if (v->deepstack[k] == layer) return k;
  return -1;
}

/* Host indices of a call (vision_run.h): rotary positions, bilinear corners and weights, image boundaries. */
static int q3_index(vis_run *r, const int32_t *grid, int n) {
  const qvl_vision_config *v = r->v;
  int64_t N = r->rows;
  int side = 1;
  while (side * side < v->num_position_embeddings) side++;
  int32_t *pos, *idx, *wts, *cu;
  r->pos = vis_ix_take(r, 2 * N, &pos);
  r->bil_idx = vis_ix_take(r, 4 * N, &idx);
  r->bil_w = (float *)vis_ix_take(r, 4 * N, &wts);
  r->cu_dev[0] = vis_ix_take(r, vis_count_seqs(grid, n) + 1, &cu);
  vis_rot_pos(pos, grid, n, v->merge);
  vis_bilinear(idx, (float *)wts, grid, n, v->merge, side);
  r->n_seq[0] = vis_cu_seqlens(cu, grid, n);
  r->cu[0] = cu, r->n_att = 1;
  return QVL_OK;
}

/* The interpolated position embedding alone, for the goldens' tap: the same op applied to zeros (eager only). */
static int q3_tap_pos(vis_run *r, const qvl_weights *w, qvl_tap_fn tap, void *ud) {
  qvl_backend *b = r->b;
  int64_t N = r->rows;
  int D = r->v->hidden, rc;
  float *zero = calloc((size_t)(N * D), sizeof(float));
  if (!zero) return qvl_fail(r->err, QVL_ERR_NOMEM, "qwen3-vl: cannot allocate the tap buffer");
  rc = b->upload_f32(b, r->x, zero, N * D);
  free(zero);
  if (rc || (rc = b->add_bilinear(b, r->x, w->pos_embed, r->bil_idx, r->bil_w, N, D))) return rc;
  tap(ud, "patch_embed", r->h, N, D);
  tap(ud, "pos_embed", r->x, N, D);
  return QVL_OK;
}

/* Patch embedding + position embedding, the blocks with the DeepStack mergers, the merger (no uploads). */
static int q3_forward(vis_run *r, const qvl_weights *w, const void *px, qvl_tap_fn tap, void *ud) {
  const qvl_vision_config *v = r->v;
  qvl_backend *b = r->b;
  int64_t N = r->rows;
  int D = v->hidden, rc;
  if ((rc = b->rope_tables(b, r->cos, r->sin, r->pos, NULL, N, v->head_dim, 10000.0f)) ||
      (rc = b->linear(b, r->h, px, w->patch_w, w->patch_b, N, D, r->k, QVL_EPI_NONE)) ||
      (tap && (rc = q3_tap_pos(r, w, tap, ud))) ||
      (rc = b->add_bilinear(b, r->h, w->pos_embed, r->bil_idx, r->bil_w, N, D)))
    return rc;
  for (int l = 0; l < v->depth; l++) {
    if ((rc = q3_block(r, &w->vit[l], r->att[0]))) return rc;
    if (tap) vis_tap_block(tap, ud, l, r->h, N, D);
    int k = deepstack_slot(v, l);
    if (k >= 0 && (rc = vis_merger(r, &w->deepstack[k], 1, r->h, r->a, r->out_dev[1 + k]))) return rc;
  }
  return vis_merger(r, &w->merger, 0, r->h, r->a, r->out_dev[0]);
}

int qwen3_vl_vision(vis_ws *ws, const qvl_weights *w, const vis_input *in, qvl_vision_out *out, qvl_tap_fn tap,
                    void *ud, qvl_err *err) {
  vis_arch arch = {1 + ws->cfg->vision.n_deepstack, q3_index, q3_forward};
  return vis_run_tower(ws, &arch, w, in, out, tap, ud, err);
}
