/* cpu_paged.c - the paged KV cache ops of the f32 reference backend (backend.h has the contracts):
 * qkv_to_cache (q/k RMS norm, NeoX rotary, k and v into their slots), attention_paged (causal GQA of a ragged
 * batch over block tables) and argmax_rows. Attention gathers a sequence's keys and values into contiguous rows
 * per kv head, then per q head S = q k^T * scale (sgemm), the causal mask, an f32 softmax with the max
 * subtracted (double sum), O = S v (sgemm) - the numerics the contiguous reference had. These are also what the
 * CUDA ops are tested against, so every bound of the contract is checked. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"

/* x [hd] := rmsnorm(x) * w (when w), then NeoX rotation by cos/sin [hd]. */
static void norm_rotate(float *dst, const float *x, const float *w, const float *cos, const float *sin, int hd,
                        float eps) {
  float t[512];
  int half = hd / 2;
  float inv = 1.0f;
  if (w) {
    double ss = 0;
    for (int j = 0; j < hd; j++) ss += (double)x[j] * x[j];
    inv = 1.0f / sqrtf((float)(ss / hd) + eps);
  }
  for (int j = 0; j < hd; j++) t[j] = w ? x[j] * inv * w[j] : x[j];
  for (int d = 0; d < half; d++) dst[d] = t[d] * cos[d] - t[d + half] * sin[d];
  for (int d = half; d < hd; d++) dst[d] = t[d] * cos[d] + t[d - half] * sin[d];
}

int cpu_qkv_to_cache(qvl_backend *b, void *q, void *kc, void *vc, const void *qkv, const void *q_norm,
                     const void *k_norm, const float *cos, const float *sin, const int32_t *slot, int64_t rows,
                     int heads, int kv_heads, int head_dim, float eps) {
  if (head_dim > 512 || head_dim % 2 || kv_heads < 1)
    return qvl_fail(b->err, QVL_ERR_UNSUPPORTED, "cpu qkv_to_cache: head_dim %d, %d kv heads not supported", head_dim,
                    kv_heads);
  for (int64_t r = 0; r < rows; r++)
    if (slot[r] < 0) return qvl_fail(b->err, QVL_ERR_INVALID_ARG, "cpu qkv_to_cache: row %lld has slot %d",
                                     (long long)r, slot[r]);
  const float *X = qkv, *qn = q_norm, *kn = k_norm;
  float *Q = q, *K = kc, *V = vc;
  int64_t hd = head_dim, ld = (int64_t)(heads + 2 * kv_heads) * hd, kvd = (int64_t)kv_heads * hd;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *x = X + r * ld, *c = cos + r * hd, *s = sin + r * hd;
    for (int h = 0; h < heads; h++) norm_rotate(Q + (r * heads + h) * hd, x + h * hd, qn, c, s, head_dim, eps);
    for (int g = 0; g < kv_heads; g++)
      norm_rotate(K + slot[r] * kvd + g * hd, x + (heads + g) * hd, kn, c, s, head_dim, eps);
    memcpy(V + slot[r] * kvd, x + (heads + kv_heads) * hd, (size_t)kvd * sizeof(float));
  }
  return QVL_OK;
}

/* The contract's bounds: ragged rows that fit their kv lengths and the block table, within max_q / max_kv. */
static int check_batch(qvl_backend *b, const int32_t *cu_q, const int32_t *kv_len, int n_seq, int max_blocks,
                       int block_size, int64_t q_rows, int max_q, int max_kv, int heads, int kv_heads) {
  if (kv_heads < 1 || heads % kv_heads || block_size < 1 || n_seq < 0 || cu_q[0] != 0 || cu_q[n_seq] != q_rows)
    return qvl_fail(b->err, QVL_ERR_INVALID_ARG,
                    "cpu attention_paged: %d heads over %d kv heads, block size %d, %d sequences, cu_q from %d to %d "
                    "for %lld rows",
                    heads, kv_heads, block_size, n_seq, cu_q[0], n_seq >= 0 ? cu_q[n_seq] : 0, (long long)q_rows);
  for (int s = 0; s < n_seq; s++) {
    int n = cu_q[s + 1] - cu_q[s];
    if (n < 0 || n > kv_len[s] || n > max_q || kv_len[s] > max_kv || kv_len[s] > (int64_t)max_blocks * block_size)
      return qvl_fail(b->err, QVL_ERR_INVALID_ARG,
                      "cpu attention_paged: sequence %d has %d queries over %d keys (max_q %d, max_kv %d, %d blocks "
                      "of %d)",
                      s, n, kv_len[s], max_q, max_kv, max_blocks, block_size);
  }
  return QVL_OK;
}

/* One sequence: rows q [n][heads][hd] over its kv keys, gathered per kv head into Kg, Vg [kv][hd]. */
static void attend_seq(float *out, const float *q, const float *kc, const float *vc, const int32_t *table, int n,
                       int kv, int block_size, int heads, int kv_heads, int hd, float scale, float *Kg, float *Vg,
                       float *S) {
  int group = heads / kv_heads, ld = heads * hd;
  int64_t kvd = (int64_t)kv_heads * hd;
  for (int g = 0; g < kv_heads; g++) {
    for (int t = 0; t < kv; t++) {
      int64_t slot = (int64_t)table[t / block_size] * block_size + t % block_size;
      memcpy(Kg + (int64_t)t * hd, kc + slot * kvd + (int64_t)g * hd, (size_t)hd * sizeof(float));
      memcpy(Vg + (int64_t)t * hd, vc + slot * kvd + (int64_t)g * hd, (size_t)hd * sizeof(float));
    }
    for (int h = g * group; h < (g + 1) * group; h++) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, kv, hd, scale, q + (int64_t)h * hd, ld, Kg, hd, 0.0f, S,
                  kv);
#pragma omp parallel for schedule(static)
      for (int i = 0; i < n; i++) {
        float *r = S + (int64_t)i * kv;
        for (int j = kv - n + i + 1; j < kv; j++) r[j] = -INFINITY; /* query i sits at kv - n + i */
        cpu_softmax_row(r, kv);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, kv, 1.0f, S, kv, Vg, hd, 0.0f,
                  out + (int64_t)h * hd, ld);
    }
  }
}

int cpu_attention_paged(qvl_backend *b, void *out, const void *q, const void *kc, const void *vc, const int32_t *cu_q,
                        const int32_t *kv_len, const int32_t *table, int n_seq, int max_blocks, int block_size,
                        int64_t q_rows, int max_q, int max_kv, int heads, int kv_heads, int head_dim, float scale) {
  int rc = check_batch(b, cu_q, kv_len, n_seq, max_blocks, block_size, q_rows, max_q, max_kv, heads, kv_heads);
  if (rc) return rc;
  int64_t most_kv = 1, most_s = 1, ld = (int64_t)heads * head_dim;
  for (int s = 0; s < n_seq; s++) {
    int64_t n = cu_q[s + 1] - cu_q[s];
    if (kv_len[s] > most_kv) most_kv = kv_len[s];
    if (n * kv_len[s] > most_s) most_s = n * kv_len[s];
  }
  float *Kg = malloc((size_t)(most_kv * head_dim) * sizeof(float));
  float *Vg = malloc((size_t)(most_kv * head_dim) * sizeof(float)), *S = malloc((size_t)most_s * sizeof(float));
  if (!Kg || !Vg || !S) rc = qvl_fail(b->err, QVL_ERR_NOMEM, "cpu attention_paged: cannot allocate %lld keys",
                                      (long long)most_kv);
  for (int s = 0; !rc && s < n_seq; s++) {
    int n = cu_q[s + 1] - cu_q[s];
    if (n)
      attend_seq((float *)out + cu_q[s] * ld, (const float *)q + cu_q[s] * ld, kc, vc,
                 table + (int64_t)s * max_blocks, n, kv_len[s], block_size, heads, kv_heads, head_dim, scale, Kg, Vg,
                 S);
  }
  free(Kg), free(Vg), free(S);
  return rc;
}

int cpu_argmax_rows(qvl_backend *b, int32_t *out, const void *x, int64_t rows, int n) {
  (void)b;
  const float *X = x;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *row = X + r * n;
    int best = 0;
    for (int j = 1; j < n; j++)
      if (row[j] > row[best]) best = j;
    out[r] = best;
  }
  return QVL_OK;
}
