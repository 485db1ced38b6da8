/* cpu_ops.h - f32 reference implementations of the backend.h ops (same contracts). */
#ifndef QVL_BACKEND_CPU_OPS_H
#define QVL_BACKEND_CPU_OPS_H

#include "backend/backend.h"

int cpu_linear(qvl_backend *b, void *y, const void *x, const void *w, const void *bias, int64_t m, int n, int k,
               int epi);
int cpu_rmsnorm(qvl_backend *b, void *y, const void *x, const void *w, int64_t rows, int dim, float eps);
int cpu_layernorm(qvl_backend *b, void *y, const void *x, const void *w, const void *bias, int64_t rows, int dim,
                  float eps);
int cpu_add(qvl_backend *b, void *h, const void *x, int64_t n);
int cpu_silu_mul(qvl_backend *b, void *y, const void *g, const void *u, int64_t n);
int cpu_swiglu(qvl_backend *b, void *y, const void *gu, int64_t rows, int f);
int cpu_gelu_erf(qvl_backend *b, void *y, const void *x, int64_t n);
int cpu_gelu_tanh(qvl_backend *b, void *y, const void *x, int64_t n);
int cpu_rope_qk(qvl_backend *b, void *qkv, const float *cos, const float *sin, int64_t rows, int heads, int head_dim);
int cpu_rope_tables(qvl_backend *b, float *cos, float *sin, const int32_t *pos, const int32_t *order, int64_t rows,
                    int head_dim, float theta);
int cpu_attention_prepare(qvl_backend *b, void **att, const int32_t *cu, const int32_t *cu_dev, int n_seq, int heads,
                          int head_dim);
int cpu_attention(qvl_backend *b, void *out, void *qkv, const void *att, const float *cos, const float *sin,
                  float scale);
void cpu_attention_free(qvl_backend *b, void *att);
int cpu_qkv_to_cache(qvl_backend *b, void *q, void *kc, void *vc, const void *qkv, const void *q_norm,
                     const void *k_norm, const float *cos, const float *sin, const int32_t *slot, int64_t rows,
                     int heads, int kv_heads, int head_dim, float eps);
int cpu_attention_paged(qvl_backend *b, void *out, const void *q, const void *kc, const void *vc, const int32_t *cu_q,
                        const int32_t *kv_len, const int32_t *table, int n_seq, int max_blocks, int block_size,
                        int64_t q_rows, int max_q, int max_kv, int heads, int kv_heads, int head_dim, float scale);
int cpu_argmax_rows(qvl_backend *b, int32_t *out, const void *x, int64_t rows, int n);
int cpu_scatter_rows(qvl_backend *b, void *y, const void *x, const int32_t *idx, int64_t n, int64_t row_elems,
                     int accumulate);
int cpu_gather_rows(qvl_backend *b, void *y, const void *x, const int32_t *idx, int64_t n, int64_t row_elems);
int cpu_add_bilinear(qvl_backend *b, void *h, const void *table, const int32_t *idx, const float *w, int64_t rows,
                     int dim);

/* r[0 .. cols) = softmax(r): max subtracted, the sum in double (both CPU attention ops). */
void cpu_softmax_row(float *r, int64_t cols);

#endif
