/* model.h - the weights of both architectures as semantic pointers, the per-architecture name tables that
 * bind them, and the vision tower entry points. After load no code looks a tensor up by string.
 *
 * Every pointer is a backend buffer (backend.h) or NULL when that part was not loaded. Shapes use the
 * config's names: D vision hidden, F vision intermediate, O out_hidden (= text hidden H), K = 3*T*P*P. */
#ifndef QVL_MODELS_MODEL_H
#define QVL_MODELS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "io/config.h"

typedef struct vit_layer {
  void *norm1_w, *norm1_b;  /* [D]; _b: Qwen3-VL LayerNorm only */
  void *norm2_w, *norm2_b;  /* [D] */
  void *qkv_w, *qkv_b;      /* [3D, D], [3D]: q, k, v outputs, heads contiguous */
  void *proj_w, *proj_b;    /* [D, D], [D] */
  void *fc1_w, *fc1_b;      /* Qwen3-VL linear_fc1: [F, D], [F]; Qwen2.5-VL gate_proj and up_proj rows stacked
                             * at load, one GEMM: [2F, D], [2F] */
  void *fc2_w, *fc2_b;      /* down_proj / linear_fc2: [D, F], [D] */
} vit_layer;

typedef struct vit_merger {
  void *norm_w, *norm_b;    /* [D] (main merger) or [4D] (DeepStack, norm after the 2x2 shuffle); _b Qwen3-VL */
  void *fc1_w, *fc1_b;      /* [4D, 4D], [4D] */
  void *fc2_w, *fc2_b;      /* [O, 4D], [O] */
} vit_merger;

typedef struct lm_layer {
  void *in_norm_w, *post_norm_w;      /* [H] */
  void *qkv_w, *qkv_b;                /* [(heads + 2 kv) * hd, H], [(heads + 2 kv) * hd]: q_proj, k_proj, v_proj
                                       * rows stacked at load, one GEMM (bias: Qwen2.5-VL) */
  void *o_w;                          /* [H, heads*hd] */
  void *q_norm_w, *k_norm_w;          /* [hd], Qwen3-VL */
  void *gate_up_w, *down_w;           /* [2I, H] gate_proj then up_proj rows, [H, I] */
} lm_layer;

typedef struct qvl_weights {
  void *patch_w, *patch_b;  /* [D, 3, T, P, P] used as [D, K]; bias Qwen3-VL only */
  void *pos_embed;          /* Qwen3-VL [num_position_embeddings, D] */
  vit_layer *vit;           /* [depth] */
  vit_merger merger;
  vit_merger *deepstack;    /* [n_deepstack] */
  int vit_ffn;              /* the vision MLP width as bound: intermediate, or rounded up to a multiple of 64 on
                             * GPU backends (3420 -> 3456: zero rows/columns are exact, and cuBLASLt runs 3x
                             * faster on aligned shapes, ../shared/research/kernels.md §2) */
  void *embed;              /* [vocab, H] */
  void *final_norm;         /* [H] */
  void *lm_head;            /* [vocab, H]; the embedding when tied */
  lm_layer *lm;             /* [layers] */
} qvl_weights;

/* ---- name tables ---------------------------------------------------------------------------------- */

/* Symbolic dimensions of a rule's shape, resolved against the config. */
typedef enum qvl_dim {
  X_NONE = 0, X_VD, X_VF, X_V3D, X_V4D, X_VOUT, X_VC, X_VT, X_VP, X_NPOS,
  X_TD, X_TF, X_VOCAB, X_QD, X_KVD, X_HD,
  /* The first dim of a tensor bound as a row block of a fused buffer: its rows (QD, KVD, KVD, TF, TF) at their
   * place in [q | k | v] (QD + 2 KVD rows) or [gate | up] (2 TF rows). */
  X_FUSE_Q, X_FUSE_K, X_FUSE_V, X_FUSE_GATE, X_FUSE_UP,
  /* The same for the vision MLP (Qwen2.5-VL): gate and up rows (VF each, bound at vit_ffn) in [gate | up]. */
  X_FUSE_VGATE, X_FUSE_VUP
} qvl_dim;

typedef enum qvl_scope { SCOPE_VISION, SCOPE_VIT_LAYER, SCOPE_DEEPSTACK, SCOPE_TEXT, SCOPE_LM_LAYER } qvl_scope;

typedef struct qvl_tensor_rule {
  qvl_scope scope;
  const char *name;   /* HF checkpoint name; %d = layer / DeepStack index for per-layer scopes */
  size_t offset;      /* offsetof the field in qvl_weights / vit_layer / vit_merger / lm_layer */
  qvl_dim shape[5];   /* X_NONE-terminated */
} qvl_tensor_rule;

typedef enum qvl_part { PART_VISION = 1, PART_TEXT = 2 } qvl_part;

typedef struct qvl_tensor_spec {
  char name[128];
  int ndim;
  int64_t shape[5];         /* as in the checkpoint */
  int64_t numel;
  int64_t bound_shape[5];   /* as bound on the backend (vision MLP width padded, see vit_ffn) */
  int64_t bound_numel;
  qvl_part part;
  void **slot;        /* where the bound buffer goes */
  int64_t slot_offset; /* elements into *slot where this tensor starts (fused tensors; 0 otherwise) */
  int64_t slot_numel;  /* elements of the whole *slot buffer (bound_numel unless fused) */
} qvl_tensor_spec;

/* The table of an architecture (qwen2_5_vl.c, qwen3_vl.c); n_rules receives its length. */
const qvl_tensor_rule *qwen2_5_vl_rules(int *n_rules);
const qvl_tensor_rule *qwen3_vl_rules(int *n_rules);

/* Expands the architecture's table against cfg into concrete specs (per-layer rules repeated), allocating
 * w's layer arrays. lm_head is omitted when embeddings are tied. The vision MLP width is bound rounded up to
 * a multiple of ffn_align (1: unpadded). *specs is malloc'd. */
int qvl_model_specs(const qvl_config *cfg, int ffn_align, qvl_weights *w, qvl_tensor_spec **specs, int *n,
                    qvl_err *err);
/* Copies a checkpoint-shaped tensor into its bound shape (zero padding; 1-D or 2-D). */
void qvl_spec_pad(const qvl_tensor_spec *s, float *dst, const float *src);
void qvl_weights_free(qvl_weights *w, qvl_backend *b); /* frees buffers and layer arrays */

/* ---- vision tower -------------------------------------------------------------------------------- */

/* Called with intermediate tensors (a backend buffer of rows x cols elements) when non-NULL:
 * "patch_embed" (natural order), "pos_embed" (Qwen3-VL, the added interpolation), "block.%d" (output of
 * block i; Qwen2.5-VL in window order). Used by tests and debugging. */
typedef void (*qvl_tap_fn)(void *ud, const char *name, const void *buf, int64_t rows, int64_t cols);

typedef struct qvl_vision_out {
  int n;               /* 1 + n_deepstack */
  int64_t rows, cols;  /* rows = patches / merge^2, cols = out_hidden */
  float *data[1 + QVL_MAX_LIST]; /* host f32 [rows][cols] each, malloc'd: main features, then DeepStack; or */
  void *dev[1 + QVL_MAX_LIST];   /* the same in be's buffers and dtype (vis_input.device_out; data[] then NULL) */
  qvl_backend *be;
} qvl_vision_out;

void qvl_vision_out_free(qvl_vision_out *o);

/* One batch of images: grids and pixel rows [sum t*h*w][3*T*P*P], either host f32 (uploaded and converted)
 * or already a backend buffer in the backend's dtype (the GPU preprocessing path, benchmarks). */
typedef struct vis_input {
  const int32_t *grid; /* [n][3] */
  int n;
  const float *host_pixels;
  const void *dev_pixels;
  int64_t max_patches; /* a lower limit than the workspace's for this call; 0: the workspace's */
  int device_out;      /* the features stay on the device (qvl_vision_out.dev: no download, no host copy) */
} vis_input;

/* The device memory of the towers, planned at open from the limits (vision_run.h). */
typedef struct vis_ws vis_ws;

/* One call on the workspace (grids within its limits, else QVL_ERR_LIMIT before any device work). out == NULL
 * leaves the features on the device (benchmarks); the call still synchronises. */
int qwen2_5_vl_vision(vis_ws *ws, const qvl_weights *w, const vis_input *in, qvl_vision_out *out, qvl_tap_fn tap,
                      void *ud, qvl_err *err);
int qwen3_vl_vision(vis_ws *ws, const qvl_weights *w, const vis_input *in, qvl_vision_out *out, qvl_tap_fn tap,
                    void *ud, qvl_err *err);

/* gate_up.c: the first half of a SwiGLU MLP, y [rows][f] = silu(gate) * up of gu = x [rows][k] w [2f][k]^T (+ bias
 * [2f]) (w: gate rows, then up rows). Through the backend's fused linear_swiglu when fused is set and the backend
 * has it (the CUDA backend on Hopper unless QVL_FUSED_SWIGLU=0); else, and where that answers QVL_ERR_UNSUPPORTED,
 * linear into gu [rows][2f] (scratch) and swiglu. */
int mlp_gate_up(qvl_backend *b, void *y, void *gu, const void *x, const void *w, const void *bias, int64_t rows, int f,
                int k, int fused);

#endif
