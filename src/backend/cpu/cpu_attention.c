/* cpu_attention.c - non-causal attention over packed ragged sequences, f32. The rotary, when given, is rope_qk on
 * qkv in place first. Per sequence and head: S = Q K^T * scale (sgemm on strided views of qkv), row softmax in f32
 * with the max subtracted, O = S V (sgemm). Queries go in blocks of 256 rows so S stays small for long sequences
 * (a 4096x4096 image is 65,536 patches in one sequence). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"

enum { Q_BLOCK = 256 };

void cpu_softmax_row(float *r, int64_t cols) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < cols; j++) mx = r[j] > mx ? r[j] : mx;
  double sum = 0;
  for (int64_t j = 0; j < cols; j++) {
    r[j] = expf(r[j] - mx);
    sum += r[j];
  }
  float inv = (float)(1.0 / sum);
  for (int64_t j = 0; j < cols; j++) r[j] *= inv;
}

static void softmax_rows(float *s, int rows, int cols) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < rows; i++) cpu_softmax_row(s + (int64_t)i * cols, cols);
}

/* The prepared state: the sequence boundaries and the head layout. */
typedef struct cpu_att {
  int n_seq, heads, head_dim;
  int32_t cu[];
} cpu_att;

int cpu_attention_prepare(qvl_backend *b, void **att, const int32_t *cu, const int32_t *cu_dev, int n_seq, int heads,
                          int head_dim) {
  (void)cu_dev; /* host memory here, with the same values as cu */
  *att = NULL;
  if (n_seq < 0 || heads < 1 || head_dim < 1)
    return qvl_fail(b->err, QVL_ERR_INVALID_ARG, "cpu attention: %d sequences of %d heads x %d", n_seq, heads, head_dim);
  for (int s = 0; s < n_seq; s++)
    if (cu[s + 1] < cu[s]) return qvl_fail(b->err, QVL_ERR_INVALID_ARG, "cpu attention: cu_seqlens not sorted");
  cpu_att *a = malloc(sizeof *a + (size_t)(n_seq + 1) * sizeof(int32_t));
  if (!a) return qvl_fail(b->err, QVL_ERR_NOMEM, "cpu attention: out of memory");
  a->n_seq = n_seq, a->heads = heads, a->head_dim = head_dim;
  memcpy(a->cu, cu, (size_t)(n_seq + 1) * sizeof(int32_t));
  *att = a;
  return QVL_OK;
}

void cpu_attention_free(qvl_backend *b, void *att) {
  (void)b;
  free(att);
}

int cpu_attention(qvl_backend *b, void *out, void *qkv, const void *att, const float *cos, const float *sin,
                  float scale) {
  const cpu_att *a = att;
  const int32_t *cu = a->cu;
  int n_seq = a->n_seq, heads = a->heads, head_dim = a->head_dim, rc;
  if (cos && (rc = cpu_rope_qk(b, qkv, cos, sin, cu[n_seq], heads, head_dim))) return rc; /* in place */
  const float *QKV = qkv;
  float *O = out;
  int ld = 3 * heads * head_dim, ldo = heads * head_dim, max_len = 0;
  for (int s = 0; s < n_seq; s++)
    if (cu[s + 1] - cu[s] > max_len) max_len = cu[s + 1] - cu[s];
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
