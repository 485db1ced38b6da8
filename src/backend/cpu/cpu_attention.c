/* cpu_attention.c - non-causal attention over packed ragged sequences, f32.
 * Per sequence and head: S = Q K^T * scale (sgemm on strided views of qkv), row softmax in f32 with the
 * max subtracted, O = S V (sgemm). Queries go in blocks of 256 rows so S stays small for long sequences
 * (a 4096x4096 image is 65,536 patches in one sequence). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "backend/cpu/cpu_ops.h"

enum { Q_BLOCK = 256 };

static void softmax_rows(float *s, int rows, int cols) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < rows; i++) {
    float *r = s + (int64_t)i * cols, mx = -INFINITY;
    for (int j = 0; j < cols; j++) mx = r[j] > mx ? r[j] : mx;
    double sum = 0;
    for (int j = 0; j < cols; j++) {
      r[j] = expf(r[j] - mx);
      sum += r[j];
    }
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < cols; j++) r[j] *= inv;
  }
}

int cpu_attention(qvl_backend *b, void *out, const void *qkv, const int32_t *cu, int n_seq, int heads, int head_dim,
                  float scale) {
  const float *QKV = qkv;
  float *O = out;
  int ld = 3 * heads * head_dim, ldo = heads * head_dim, max_len = 0;
  for (int s = 0; s < n_seq; s++) {
    if (cu[s + 1] < cu[s]) return qvl_fail(b->err, QVL_ERR_INVALID_ARG, "cpu attention: cu_seqlens not sorted");
    if (cu[s + 1] - cu[s] > max_len) max_len = cu[s + 1] - cu[s];
  }
  float *S = malloc((size_t)Q_BLOCK * (size_t)(max_len ? max_len : 1) * sizeof(float));
  if (!S) return qvl_fail(b->err, QVL_ERR_NOMEM, "cpu attention: cannot allocate scores for length %d", max_len);
  for (int s = 0; s < n_seq; s++) {
    int n = cu[s + 1] - cu[s];
    for (int h = 0; h < heads; h++) {
      const float *Q = QKV + (int64_t)cu[s] * ld + (int64_t)h * head_dim;
      const float *K = Q + (int64_t)heads * head_dim, *V = Q + 2 * (int64_t)heads * head_dim;
      for (int q0 = 0; q0 < n; q0 += Q_BLOCK) {
        int nq = n - q0 < Q_BLOCK ? n - q0 : Q_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, n, head_dim, scale, Q + (int64_t)q0 * ld, ld, K, ld,
                    0.0f, S, n);
        softmax_rows(S, nq, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, head_dim, n, 1.0f, S, n, V, ld, 0.0f,
                    O + ((int64_t)cu[s] + q0) * ldo + (int64_t)h * head_dim, ldo);
      }
    }
  }
  free(S);
  return QVL_OK;
}
