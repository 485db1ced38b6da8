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
static int q3_block(vis_run *r, const vit_layer *L, const int32_t *cu, int n_seq) {
  const qvl_vision_config *v = r->v;
  qvl_backend *b = r->b;
  int64_t N = r->rows;
  int D = v->hidden, F = r->ffn_width, rc;
  if ((rc = b->layernorm(b, r->x, r->h, L->norm1_w, L->norm1_b, N, D, v->norm_eps)) ||
      (rc = b->linear(b, r->qkv, r->x, L->qkv_w, L->qkv_b, N, 3 * D, D, QVL_EPI_NONE)) ||
      (rc = b->rope_qk(b, r->qkv, r->cos, r->sin, N, v->heads, v->head_dim)) ||
      (rc = b->attention(b, r->x, r->qkv, cu, n_seq, v->heads, v->head_dim, vis_attn_scale(v))) ||
      (rc = b->linear(b, r->h, r->x, L->proj_w, L->proj_b, N, D, D, QVL_EPI_RESIDUAL)) ||
      (rc = b->layernorm(b, r->x, r->h, L->norm2_w, L->norm2_b, N, D, v->norm_eps)) ||
      (rc = b->linear(b, r->ffn, r->x, L->fc1_w, L->fc1_b, N, F, D, QVL_EPI_GELU_TANH)) ||
      (rc = b->linear(b, r->h, r->ffn, L->fc2_w, L->fc2_b, N, D, F, QVL_EPI_RESIDUAL)))
    return rc;
  return QVL_OK;
}

static int deepstack_slot(const qvl_vision_config *v, int layer) {
  for (int k = 0; k < v->n_deepstack; k++)
    if (v->deepstack[k] == layer) return k;
  return -1;
}

static int q3_embed(vis_run *r, const qvl_weights *w, const vis_input *in, qvl_tap_fn tap, void *ud) {
  const qvl_vision_config *v = r->v;
  qvl_backend *b = r->b;
  int64_t N = r->rows;
  int D = v->hidden, side = 1, rc;
  while (side * side < v->num_position_embeddings) side++;
  int32_t *idx = malloc((size_t)N * 4 * sizeof(int32_t));
  float *wts = malloc((size_t)N * 4 * sizeof(float));
  if (!idx || !wts) {
    free(idx), free(wts);
    return qvl_fail(r->err, QVL_ERR_NOMEM, "qwen3-vl: cannot allocate position indices");
  }
  vis_bilinear(idx, wts, in->grid, in->n, v->merge, side);
  rc = b->upload(b, r->idx, idx, (size_t)N * 4 * sizeof(int32_t));
  if (!rc) rc = b->upload(b, r->wts, wts, (size_t)N * 4 * sizeof(float));
  free(idx), free(wts);
  const void *px;
  if (rc || (rc = vis_pixels(r, in, &px)) || (rc = b->linear(b, r->h, px, w->patch_w, w->patch_b, N, D, r->k, QVL_EPI_NONE)))
    return rc;
  if (tap) { /* the interpolation alone, for the goldens: the same op applied to zeros */
    float *zero = calloc((size_t)(N * D), sizeof(float));
    if (!zero) return qvl_fail(r->err, QVL_ERR_NOMEM, "qwen3-vl: cannot allocate the tap buffer");
    rc = b->upload_f32(b, r->x, zero, N * D);
    free(zero);
    if (rc || (rc = b->add_bilinear(b, r->x, w->pos_embed, r->idx, r->wts, N, D))) return rc;
    tap(ud, "patch_embed", r->h, N, D);
    tap(ud, "pos_embed", r->x, N, D);
  }
  return b->add_bilinear(b, r->h, w->pos_embed, r->idx, r->wts, N, D);
}

static int q3_forward(vis_run *r, const qvl_weights *w, const int32_t *cu, int n_seq, qvl_tap_fn tap, void *ud) {
  const qvl_vision_config *v = r->v;
  int rc;
  for (int l = 0; l < v->depth; l++) {
    if ((rc = q3_block(r, &w->vit[l], cu, n_seq))) return rc;
    if (tap) vis_tap_block(tap, ud, l, r->h, r->rows, v->hidden);
    int k = deepstack_slot(v, l);
    if (k >= 0 && (rc = vis_merger(r, &w->deepstack[k], 1, r->h, r->out_dev[2 + k]))) return rc;
  }
  return vis_merger(r, &w->merger, 0, r->h, r->out_dev[0]);
}

int qwen3_vl_vision(qvl_backend *b, const qvl_config *cfg, const qvl_weights *w, const vis_input *in,
                    qvl_vision_out *out, qvl_tap_fn tap, void *ud, qvl_err *err) {
  const int32_t *grid = in->grid;
  int n_img = in->n;
  const qvl_vision_config *v = &cfg->vision;
  vis_run r;
  int rc = vis_run_begin(&r, b, v, w->vit_ffn, in, 2 + v->n_deepstack, err);
  if (rc) return rc;
  int64_t N = r.rows;
  int32_t *cu = malloc((size_t)(vis_count_seqs(grid, n_img) + 1) * sizeof(int32_t));
  int32_t *pos = malloc((size_t)N * 2 * sizeof(int32_t));
  if (!cu || !pos) {
    rc = qvl_fail(err, QVL_ERR_NOMEM, "qwen3-vl: cannot allocate indices for %lld patches", (long long)N);
    goto done;
  }
  int n_seq = vis_cu_seqlens(cu, grid, n_img);
  vis_rot_pos(pos, grid, n_img, v->merge);
  if ((rc = vis_run_rope(&r, pos, NULL)) || (rc = q3_embed(&r, w, in, tap, ud)) ||
      (rc = q3_forward(&r, w, cu, n_seq, tap, ud)))
    goto done;
  rc = vis_run_collect(&r, out, 1 + v->n_deepstack);
done:
  free(cu), free(pos);
  vis_run_end(&r);
  return rc;
}
