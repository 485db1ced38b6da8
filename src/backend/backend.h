/* backend.h - the op table. Models call these and nothing else; a backend owns its memory.
 *
 * A "buffer" is an opaque device pointer holding elements of the backend's activation dtype
 * (f32 on cpu, bf16 on cuda) unless an op says otherwise (index arrays are int32). Shapes are row-major,
 * rows first. Argument order everywhere: outputs, inputs, sizes, scalars. Every op returns QVL_OK or a
 * negative status and fills b->err.
 */
#ifndef QVL_BACKEND_H
#define QVL_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct qvl_backend qvl_backend;

/* GEMM epilogues: what linear does with the product before writing y. */
typedef enum qvl_epi {
  QVL_EPI_NONE = 0,      /* y = x w^T + bias */
  QVL_EPI_GELU_TANH = 1, /* y = gelu_tanh(x w^T + bias) (Qwen3-VL vision MLP; cuBLASLt's GELU is the tanh form) */
  QVL_EPI_RESIDUAL = 2,  /* y += x w^T + bias (the residual add of a block, one rounding on GPU) */
} qvl_epi;

struct qvl_backend {
  const char *name;  /* "cpu" | "cuda" */
  char device[96];   /* what it runs on, e.g. "NVIDIA H100 80GB HBM3" */
  size_t elem_bytes; /* bytes per activation/weight element: 4 (f32) or 2 (bf16) */
  void *ctx;
  qvl_err *err;      /* where ops report; set by the owner */
  int64_t mem_held;  /* bytes held from the device now (in use + cached for reuse) */
  int64_t mem_peak;  /* the most ever held */

  /* ---- memory ---------------------------------------------------------------------------------- */
  int (*alloc)(qvl_backend *b, void **out, size_t bytes);
  void (*free)(qvl_backend *b, void *p); /* NULL is a no-op; the block may be kept for reuse */
  void (*trim)(qvl_backend *b);          /* gives every block kept for reuse back (synchronises) */
  /* Host memory the device copies from without staging (pinned on CUDA), for upload sources. */
  int (*host_alloc)(qvl_backend *b, void **out, size_t bytes);
  void (*host_free)(qvl_backend *b, void *p); /* NULL is a no-op */
  /* Uploads are ordered with the ops that follow; src may be freed as soon as the call returns.
   * host f32 -> buffer elements (converted to the backend dtype) */
  int (*upload_f32)(qvl_backend *b, void *dst, const float *src, int64_t n);
  /* buffer elements -> host f32 */
  int (*download_f32)(qvl_backend *b, float *dst, const void *src, int64_t n);
  /* raw bytes buffer -> host (index arrays, argmax_rows); waits for the ops before it, like download_f32 */
  int (*download)(qvl_backend *b, void *dst, const void *src, size_t bytes);
  /* raw bytes host -> buffer (index arrays); from host_alloc memory the copy is asynchronous, so the source
   * must stay as it is until the next sync */
  int (*upload)(qvl_backend *b, void *dst, const void *src, size_t bytes);
  /* raw bytes buffer -> buffer, in order with the ops around it */
  int (*copy)(qvl_backend *b, void *dst, const void *src, size_t bytes);
  int (*sync)(qvl_backend *b);
  /* Per-category device time since the last call, in ms: [0] GEMMs, [1] attention, [2] everything else.
   * Only when the backend was created with profiling on (QVL_PROFILE=1 in the environment); NULL otherwise. */
  int (*profile)(qvl_backend *b, double ms[3]);
  void (*destroy)(qvl_backend *b);

  /* ---- replay (NULL on backends without graphs) ----
   * The ops issued between graph_begin and graph_end are recorded instead of run; graph_launch replays them with
   * the buffers' contents at launch. No uploads, downloads, syncs or allocations of new memory between begin
   * and end, and every buffer the graph touches stays allocated until graph_free. */
  int (*graph_begin)(qvl_backend *b);
  int (*graph_end)(qvl_backend *b, void **graph);
  int (*graph_launch)(qvl_backend *b, void *graph);
  void (*graph_free)(qvl_backend *b, void *graph); /* NULL is a no-op */

  /* ---- ops ------------------------------------------------------------------------------------- */
  /* y[m,n] = x[m,k] w[n,k]^T (+ bias[n] when bias != NULL), then the epilogue epi (qvl_epi) */
  int (*linear)(qvl_backend *b, void *y, const void *x, const void *w, const void *bias, int64_t m, int n, int k,
                int epi);
  /* Optional (NULL where a backend picks its GEMM kernels without timing them): linear_record starts noting each
   * linear's shape and weights, linear_tune stops it and makes ahead, on synthetic operands, every timed choice
   * that calls of those shapes with lo .. hi rows would make on their first run (each shape's hi scaled by its
   * share of the recorded rows); *n_tuned: the choices made. For a server, whose batches meet new row counts. */
  int (*linear_record)(qvl_backend *b);
  int (*linear_tune)(qvl_backend *b, int64_t lo, int64_t hi, int *n_tuned);
  /* y = x / sqrt(mean(x^2) + eps) * w, per row of dim */
  int (*rmsnorm)(qvl_backend *b, void *y, const void *x, const void *w, int64_t rows, int dim, float eps);
  /* y = (x - mean) / sqrt(var + eps) * w + bias, per row of dim */
  int (*layernorm)(qvl_backend *b, void *y, const void *x, const void *w, const void *bias, int64_t rows, int dim,
                   float eps);
  /* h += x (n elements) */
  int (*add)(qvl_backend *b, void *h, const void *x, int64_t n);
  /* y = silu(g) * u (n elements); y may alias g */
  int (*silu_mul)(qvl_backend *b, void *y, const void *g, const void *u, int64_t n);
  /* y[r][j] = silu(gu[r][j]) * gu[r][f + j] for gu [rows][2f] (gate | up of one GEMM), y [rows][f] not
   * overlapping gu; rounding as silu_mul */
  int (*swiglu)(qvl_backend *b, void *y, const void *gu, int64_t rows, int f);
  /* Optional (NULL on a backend without it): y [rows][f] = swiglu of gu = x [rows][k] w [2f][k]^T (+ bias [2f] when
   * bias != NULL), i.e. linear then swiglu in one op that never writes gu, rounded as the two round. Returns
   * QVL_ERR_UNSUPPORTED, with nothing written and b->err untouched, where it does not run this shape, these
   * pointers or this device: the caller then runs linear and swiglu (models/gate_up.c). */
  int (*linear_swiglu)(qvl_backend *b, void *y, const void *x, const void *w, const void *bias, int64_t rows, int f,
                       int k);
  /* y = gelu(x), exact erf form (nn.GELU()) or tanh approximation (gelu_pytorch_tanh); y may alias x */
  int (*gelu_erf)(qvl_backend *b, void *y, const void *x, int64_t n);
  int (*gelu_tanh)(qvl_backend *b, void *y, const void *x, int64_t n);
  /* Rotary tables cos/sin [rows][head_dim] (f32 buffers) from int32 positions pos [n][2] = (row, col): row r
   * uses pos[order ? order[r] : r]; frequencies 1/theta^(2j/(head_dim/2)), angles [row*f, col*f],
   * cos/sin of concat(angles, angles) (models/vision_index.h vis_rope_tables). */
  int (*rope_tables)(qvl_backend *b, float *cos, float *sin, const int32_t *pos, const int32_t *order, int64_t rows,
                     int head_dim, float theta);
  /* Non-causal attention, block-diagonal over the sequences [cu[i], cu[i+1]) (n_seq + 1 entries, cu[0] = 0,
   * cu[n_seq] = rows), in two steps. attention_prepare does the host work once: picks the kernel and its plan
   * from cu (host int32) and fills *att's device state from cu_dev (the same values in an int32 buffer, already
   * uploaded; read in stream order). attention then runs with no host work beyond the launch (it may be
   * captured in a graph) as often as needed: out[rows][heads*head_dim] = softmax(q k^T * scale) v, qkv
   * [rows][3][heads][head_dim]; when cos != NULL, q and k are first rotated NeoX style (pair d, d + head_dim/2, f32
   * math, one rounding) by the f32 table buffers cos/sin [rows][head_dim]; qkv's q and k may be left rotated or
   * not (the caller reads them no more). attention_free releases *att (NULL is a no-op). */
  int (*attention_prepare)(qvl_backend *b, void **att, const int32_t *cu, const int32_t *cu_dev, int n_seq,
                           int heads, int head_dim);
  int (*attention)(qvl_backend *b, void *out, void *qkv, const void *att, const float *cos, const float *sin,
                   float scale);
  void (*attention_free)(qvl_backend *b, void *att);
  /* ---- paged KV cache (language model, batches of sequences) ----
   * A layer's cache is two pools kc, vc of [slots][kv_heads][head_dim] elements; slot = block * block_size +
   * offset. Sequence s keeps its token t in slot table[s * max_blocks + t / block_size] * block_size +
   * t % block_size. Index and length arrays are int32 buffers on the backend, so a step can be replayed with new
   * contents (graphs); the host ints are bounds fixed for the call. */
  /* qkv [rows][(heads + 2 * kv_heads) * head_dim], one GEMM's output (q heads, then k heads, then v heads):
   * q heads RMS-normed by q_norm (f32 eps; skipped when q_norm is NULL), rotated NeoX style by cos/sin
   * [rows][head_dim] (f32 buffers), written to q [rows][heads][head_dim]; k heads normed by k_norm and rotated,
   * v heads as they are, both written to kc, vc at slot[r]. */
  int (*qkv_to_cache)(qvl_backend *b, void *q, void *kc, void *vc, const void *qkv, const void *q_norm,
                      const void *k_norm, const float *cos, const float *sin, const int32_t *slot, int64_t rows,
                      int heads, int kv_heads, int head_dim, float eps);
  /* out [q_rows][heads][head_dim] = causal GQA attention over the paged cache for a batch of n_seq sequences:
   * sequence s owns q rows [cu_q[s], cu_q[s+1]) (n_seq + 1 entries), which are the last cu_q[s+1] - cu_q[s] of its
   * kv_len[s] tokens (query i of those sits at position kv_len[s] - n_s + i and sees keys 0 .. that position);
   * table [n_seq][max_blocks]. max_q >= every n_s and max_kv >= every kv_len[s] bound the work (grid sizes);
   * kv head g serves q heads g*r .. g*r + r - 1, r = heads / kv_heads. */
  int (*attention_paged)(qvl_backend *b, void *out, const void *q, const void *kc, const void *vc,
                         const int32_t *cu_q, const int32_t *kv_len, const int32_t *table, int n_seq, int max_blocks,
                         int block_size, int64_t q_rows, int max_q, int max_kv, int heads, int kv_heads,
                         int head_dim, float scale);
  /* out[r] = index of the largest of x[r][0 .. n) (the lowest index among equals), int32 buffer [rows] */
  int (*argmax_rows)(qvl_backend *b, int32_t *out, const void *x, int64_t rows, int n);
  /* y[idx[i]] = x[i] (accumulate: +=) for rows of row_elems, i < n (idx: int32 buffer). */
  int (*scatter_rows)(qvl_backend *b, void *y, const void *x, const int32_t *idx, int64_t n, int64_t row_elems,
                      int accumulate);
  /* y[i] = x[idx[i]] for rows of row_elems elements, i < n (idx: int32 buffer) */
  int (*gather_rows)(qvl_backend *b, void *y, const void *x, const int32_t *idx, int64_t n, int64_t row_elems);
  /* h[r] += sum_c w[r*4+c] * table[idx[r*4+c]] over the 4 bilinear corners (idx int32, w f32 buffers) */
  int (*add_bilinear)(qvl_backend *b, void *h, const void *table, const int32_t *idx, const float *w, int64_t rows,
                      int dim);
};

/* Creates the f32 CPU backend (OpenMP threads: n_threads, 0 = all). */
int qvl_backend_cpu_create(qvl_backend **out, int n_threads, qvl_err *err);
#ifdef QVL_HAVE_CUDA
/* Creates the bf16 CUDA backend on device ordinal dev. */
int qvl_backend_cuda_create(qvl_backend **out, int dev, qvl_err *err);
#endif

#endif
