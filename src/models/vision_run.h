/* vision_run.h - device buffers and the steps both vision towers share (merger, collection). */
#ifndef QVL_MODELS_VISION_RUN_H
#define QVL_MODELS_VISION_RUN_H

#include "models/model.h"

typedef struct vis_run {
  qvl_backend *b;
  const qvl_vision_config *v;
  qvl_err *err;
  int64_t rows;        /* N patches */
  int k;               /* pixel row width 3*T*P*P */
  int ffn_width;       /* the MLP width as bound (qvl_weights.vit_ffn) */
  void *h;             /* [N, D] residual stream */
  void *x, *y;         /* [N, D] scratch (x: normed / attention out; y: projections, merger middle) */
  void *qkv;           /* [N, 3D] */
  void *ffn, *ffn2;    /* [N, max(F, K)]: MLP middle; ffn also receives the pixel rows */
  float *cos, *sin;    /* [N, head_dim] f32 rotary tables */
  int32_t *idx;        /* [N * 4] int32 scratch (gather indices, bilinear corners) */
  int32_t *pos;        /* [N * 3] int32: rotary (row, col) per patch, then the window order (Qwen2.5-VL) */
  float *wts;          /* [N * 4] f32 bilinear weights */
  int n_out;           /* 2 + n_deepstack */
  void *out_dev[2 + QVL_MAX_LIST]; /* [0] features, [1] scratch, [2 + k] DeepStack k; each [N/4, O] */
} vis_run;

/* Validates grids, allocates every buffer for this batch. n_out_extra: 2 (+ DeepStack count). */
int vis_run_begin(vis_run *r, qvl_backend *b, const qvl_vision_config *v, int ffn_width, const vis_input *in,
                  int n_out, qvl_err *err);
void vis_run_end(vis_run *r);
/* Rotary tables on the backend from host positions pos [N][2] (vis_rot_pos) and the optional row order. */
int vis_run_rope(vis_run *r, const int32_t *pos, const int32_t *order);
/* Merger (spec §2.6, §3.6): postshuffle = 0: norm per patch [N, D] then view [N/4, 4D]; 1 (DeepStack): view
 * first, norm over 4D. RMSNorm when m->norm_b is NULL (Qwen2.5-VL), LayerNorm otherwise. fc1, gelu(erf), fc2
 * into out [N/4, O]. Uses r->x and r->y. */
int vis_merger(vis_run *r, const vit_merger *m, int postshuffle, const void *in, void *out);
/* The pixel rows as a backend buffer: in->dev_pixels, or in->host_pixels uploaded into r->ffn. */
int vis_pixels(vis_run *r, const vis_input *in, const void **px);
/* Downloads out_dev[0] and out_dev[2..n_out) into out (host f32); out == NULL only synchronises. */
int vis_run_collect(vis_run *r, qvl_vision_out *out, int n_features);
float vis_attn_scale(const qvl_vision_config *v);
void vis_tap_block(qvl_tap_fn tap, void *ud, int layer, const void *buf, int64_t rows, int64_t cols);

#endif
