/* vision_run.h - the device memory both vision towers share, planned from the engine's limits at open, and
 * the driver of one call: host index work up front, one upload, the forward (eager, or recorded once per shape
 * and replayed as a graph), collection. */
#ifndef QVL_MODELS_VISION_RUN_H
#define QVL_MODELS_VISION_RUN_H

#include "models/model.h"

enum { VIS_GRAPHS = 8 }; /* shapes whose recorded forward is kept */

/* A call shape seen before: its attention plans and, once recorded, its graph. */
typedef struct vis_shape {
  int32_t *grid;       /* [n][3] */
  int n;
  const void *px;      /* the pixel rows the graph reads */
  int64_t last_use;
  int runs;            /* eager runs so far */
  void *graph;         /* backend graph or NULL */
  void *att[2];        /* prepared attention: [0] full, [1] windows (Qwen2.5-VL) */
  int n_seq[2];
  struct vis_run *ix;  /* the index step's device pointers, valid while the plan's index area holds this shape */
} vis_shape;

/* Buffers for N = max_patches rows (G = N / merge^2 merged rows), element type of the backend:
 *   h [N, D] residual stream;  x [N, D] normed input / attention output / patch embedding;
 *   a [N, wa]: qkv [N, 3D], then the MLP (Qwen3-VL fc1 [N, F]; Qwen2.5-VL SwiGLU output [N, F]), the merger's
 *   middle [G, 4D] (Qwen3-VL) or output [G, O] (Qwen2.5-VL, before the reverse reorder), host pixel rows
 *   [N, K] (Qwen3-VL);
 *   u [N, wu] (Qwen2.5-VL only): gate|up [N, 2F], the merger's middle, host pixel rows;
 *   cos, sin [N, head_dim] f32; ix: index words of a call (int32 / f32), staged in pinned host memory and
 *   uploaded once; out[n_out] [G, O]: features, then DeepStack. */
typedef struct vis_ws {
  qvl_backend *b;
  const qvl_config *cfg;
  int64_t max_rows;
  int max_images, ffn_width, wa, wu, n_out;
  void *h, *x, *a, *u;
  float *cos, *sin;
  int32_t *ix, *ix_host;
  int64_t ix_words;
  void *out[1 + QVL_MAX_LIST];
  int64_t bytes;       /* device bytes of the plan */
  int graphs;          /* -1: where it pays (small calls), 0 never, 1 always */
  vis_shape shapes[VIS_GRAPHS];
  const vis_shape *ix_of; /* the shape whose indices ix holds */
  int64_t clock;
} vis_ws;

/* Device bytes a plan for these limits holds (weights not included). */
int64_t vis_ws_bytes(const qvl_config *cfg, int ffn_width, size_t elem_bytes, int64_t max_patches);
/* Allocates the plan; QVL_ERR_NOMEM names what did not fit. */
int vis_ws_open(vis_ws **out, qvl_backend *b, const qvl_config *cfg, int ffn_width, int64_t max_patches,
                int max_images, qvl_err *err);
void vis_ws_close(vis_ws *ws); /* NULL is a no-op; gives the memory back to the device */

/* One call: a view of the plan for its rows. */
typedef struct vis_run {
  vis_ws *ws;
  qvl_backend *b;
  const qvl_vision_config *v;
  qvl_err *err;
  int64_t rows;        /* N patches */
  int k;               /* pixel row width 3*T*P*P */
  int ffn_width;
  void *h, *x, *a, *u;
  float *cos, *sin;
  void **out_dev;
  int64_t ix_used;     /* index words taken */
  /* device index arrays, set by the architecture's index step */
  int32_t *pos, *order, *widx, *rev, *bil_idx;
  float *bil_w;
  /* attention sequences [0] full, [1] windows: host and device boundaries, counts */
  const int32_t *cu[2];
  int32_t *cu_dev[2];
  int n_seq[2], n_att;
  void *const *att;    /* prepared attention of this shape */
} vis_run;

/* Takes words of the call's index area: the device pointer, *host where the host writes them. */
int32_t *vis_ix_take(vis_run *r, int64_t words, int32_t **host);

typedef struct vis_arch {
  int n_features;      /* 1 + DeepStack outputs collected */
  /* Host index work of a call into vis_ix_take areas; sets r's device pointers and attention sequences. */
  int (*index)(vis_run *r, const int32_t *grid, int n);
  /* The whole forward from the pixel rows px to r->out_dev; no uploads, syncs or allocations. */
  int (*forward)(vis_run *r, const qvl_weights *w, const void *px, qvl_tap_fn tap, void *ud);
} vis_arch;

int vis_run_tower(vis_ws *ws, const vis_arch *arch, const qvl_weights *w, const vis_input *in, qvl_vision_out *out,
                  qvl_tap_fn tap, void *ud, qvl_err *err);

/* Merger (spec §2.6, §3.6): postshuffle = 0: norm per patch [N, D] then view [N/4, 4D]; 1 (DeepStack): view
 * first, norm over 4D. RMSNorm when m->norm_b is NULL (Qwen2.5-VL), LayerNorm otherwise. fc1 into mid
 * [N/4, 4D], gelu(erf), fc2 into out [N/4, O]. Uses r->x. */
int vis_merger(vis_run *r, const vit_merger *m, int postshuffle, const void *in, void *mid, void *out);
float vis_attn_scale(const qvl_vision_config *v);
void vis_tap_block(qvl_tap_fn tap, void *ud, int layer, const void *buf, int64_t rows, int64_t cols);

#endif
