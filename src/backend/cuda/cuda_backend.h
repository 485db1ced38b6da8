/* cuda_backend.h - state shared by the CUDA backend's host files (memory, GEMM, attention). */
#ifndef QVL_BACKEND_CUDA_BACKEND_H
#define QVL_BACKEND_CUDA_BACKEND_H

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_ops.h"

typedef struct gemm_entry {
  int64_t key;                      /* rows (m < 1024), or the row bucket (gemm.c) */
  int64_t m;                        /* the rows its layouts describe now */
  int n, k, bias, epi;
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulAlgo_t algo;        /* the one chosen (tuned) */
  cublasLtMatmulAlgo_t run;         /* the one that runs for m: algo, or the heuristic's where m refuses algo */
  cublasLtMatmulAlgo_t cand[8];     /* the heuristic's candidates until tuned */
  int n_cand, tuned;
  int search;                       /* tuning times search_space's configurations too (gemm.c) */
  int gemv_ok;                      /* gemv.cu's kernel is a candidate (m <= CUDA_GEMV_MAX_ROWS, k % 8 == 0) */
  int gemv;                         /* it runs instead of algo (where x and w are 16-byte aligned) */
} gemm_entry;

typedef struct sdpa_plan sdpa_plan; /* sdpa.c */

typedef struct cuda_ctx {
  int dev;
  cudaStream_t stream;
  cublasLtHandle_t lt;
  void *lt_ws;            /* cuBLASLt workspace */
  size_t lt_ws_bytes;
  gemm_entry *gemms;      /* algorithm cache, one entry per (rows or row bucket, n, k, bias, epilogue) */
  int n_gemms, cap_gemms;
  int *gemm_slots;        /* open-addressed index of gemms: entry + 1, 0 = empty; n_gemm_slots a power of two */
  int n_gemm_slots;
  struct cuda_rec { const void *w, *bias; int64_t m; int n, k, epi; } *rec; /* linears seen while recording */
  int n_rec, cap_rec, recording;
  struct cuda_found { int n, k, bias, epi, count; cublasLtMatmulAlgo_t a[12]; } *found; /* gemm.c: searches' best */
  int n_found, cap_found;
  double tuned_at;        /* gemm.c: when the last tuning ended (CLOCK_MONOTONIC seconds) */
  cudnnHandle_t dnn;
  sdpa_plan *plans;       /* cuDNN SDPA plans per shape bucket (sdpa.c) */
  int n_plans, cap_plans;
  struct cuda_att_pick { int key[5], choice; } *att_picks; /* attention.c: the kernel chosen per shape class */
  int n_att_picks, cap_att_picks;
  struct cuda_block { void *p; size_t bytes; } *live, *cache; /* allocated; freed and kept for reuse */
  int n_live, cap_live, n_cache, cap_cache;
  void *scratch;          /* f32 staging of the conversions (upload_f32, download_f32) */
  struct cuda_mark { int cat; char name[40]; cudaEvent_t a, z; } *marks; /* QVL_PROFILE: event pair per op */
  int n_marks, cap_marks, profiling;
  size_t scratch_bytes;
  int n_sm;               /* streaming multiprocessors: how many attention splits fill the device */
  int wgmma;              /* attn_vit_wgmma.cu runs on this device (compute capability 9.0) */
  int fused_swiglu;       /* gemm_swiglu.cu runs here and backs linear_swiglu (not with QVL_FUSED_SWIGLU=0) */
  float *attn_ws;         /* attention_paged split partials, CUDA_ATTN_WS bytes, allocated at creation so that
                           * a graph capture never allocates */
} cuda_ctx;

enum { CUDA_ATTN_WS = 8 << 20 };

int cuda_check(qvl_backend *b, cudaError_t e, const char *what);
/* Profiling brackets around one op of category cat (0 GEMM, 1 attention, 2 other); no-ops unless profiling. A mark
 * begun and never ended (an op that launched nothing) is dropped: the next begin takes its slot. */
void cuda_mark_begin(qvl_backend *b, int cat);
void cuda_mark_end(qvl_backend *b);
/* Names the op opened by cuda_mark_begin, for QVL_PROFILE=2's per-op table (printf format). */
void cuda_mark_label(qvl_backend *b, const char *fmt, ...);
/* Grows ctx->scratch to at least bytes (synchronising the stream first). */
int cuda_scratch(qvl_backend *b, size_t bytes);

int cuda_linear(qvl_backend *b, void *y, const void *x, const void *w, const void *bias, int64_t m, int n, int k,
                int epi);
/* backend.h linear_record / linear_tune (gemm.c) */
int cuda_linear_record(qvl_backend *b);
int cuda_linear_tune(qvl_backend *b, int64_t lo, int64_t hi, int *n_tuned);
void cuda_gemm_destroy(cuda_ctx *c);
/* attention.c: backend.h attention, choosing per prepared attention among attn_vit.cu and cuDNN (sdpa.c). */
int cuda_attention_prepare(qvl_backend *b, void **att, const int32_t *cu, const int32_t *cu_dev, int n_seq, int heads,
                           int head_dim);
int cuda_attention(qvl_backend *b, void *out, void *qkv, const void *att, const float *cos, const float *sin,
                   float scale);
void cuda_attention_free(qvl_backend *b, void *att);
void cuda_attention_destroy(cuda_ctx *c);
/* sdpa.c: the cuDNN candidate, on q and k already rotated (same arguments; *att is set even on failure); dense: the
 * exact-count dense plan may be built (else only the ragged plan of the count's power-of-two bucket). */
int cuda_sdpa_prepare(qvl_backend *b, void **att, const int32_t *cu, const int32_t *cu_dev, int n_seq, int heads,
                      int head_dim, int dense);
int cuda_sdpa_run(qvl_backend *b, void *out, const void *qkv, const void *att, float scale);
void cuda_sdpa_free(qvl_backend *b, void *att);
void cuda_sdpa_destroy(cuda_ctx *c);

#endif
