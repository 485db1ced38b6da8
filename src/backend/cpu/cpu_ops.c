/* cpu_ops.c - element-wise, norm, rotary and gather ops of the f32 reference backend.
 * Numerics follow the PyTorch f32 reference: statistics in f32 (double where a sum is long), erff/tanhf
 * from libm. One OpenMP loop per op. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"
#include "models/vision_index.h"

int cpu_linear(qvl_backend *b, void *y, const void *x, const void *w, const void *bias, int64_t m, int n, int k,
               int epi) {
  float *Y = y;
  const float *B = bias;
  if (m == 0) return QVL_OK;
  float beta = epi == QVL_EPI_RESIDUAL ? 1.0f : 0.0f;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)m, n, k, 1.0f, x, k, w, k, beta, Y, n);
  if (B) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; r++)
      for (int j = 0; j < n; j++) Y[r * n + j] += B[j];
  }
  return epi == QVL_EPI_GELU_TANH ? cpu_gelu_tanh(b, Y, Y, m * n) : QVL_OK;
}

int cpu_rmsnorm(qvl_backend *b, void *y, const void *x, const void *w, int64_t rows, int dim, float eps) {
  (void)b;
  float *Y = y;
  const float *X = x, *W = w;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = X + r * dim;
    double ss = 0;
    for (int j = 0; j < dim; j++) ss += (double)xr[j] * xr[j];
    float inv = 1.0f / sqrtf((float)(ss / dim) + eps);
    for (int j = 0; j < dim; j++) Y[r * dim + j] = xr[j] * inv * W[j];
  }
  return QVL_OK;
}

int cpu_layernorm(qvl_backend *b, void *y, const void *x, const void *w, const void *bias, int64_t rows, int dim,
                  float eps) {
  (void)b;
  float *Y = y;
  const float *X = x, *W = w, *B = bias;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = X + r * dim;
    double s = 0, ss = 0;
    for (int j = 0; j < dim; j++) s += xr[j];
    double mean = s / dim;
    for (int j = 0; j < dim; j++) ss += (xr[j] - mean) * (xr[j] - mean);
    float inv = (float)(1.0 / sqrt(ss / dim + eps)), mu = (float)mean;
    for (int j = 0; j < dim; j++) Y[r * dim + j] = (xr[j] - mu) * inv * W[j] + B[j];
  }
  return QVL_OK;
}

int cpu_add(qvl_backend *b, void *h, const void *x, int64_t n) {
  (void)b;
  float *H = h;
  const float *X = x;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) H[i] += X[i];
  return QVL_OK;
}

int cpu_silu_mul(qvl_backend *b, void *y, const void *g, const void *u, int64_t n) {
  (void)b;
  float *Y = y;
  const float *G = g, *U = u;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) Y[i] = G[i] / (1.0f + expf(-G[i])) * U[i];
  return QVL_OK;
}

int cpu_swiglu(qvl_backend *b, void *y, const void *gu, int64_t rows, int f) {
  (void)b;
  float *Y = y;
  const float *GU = gu;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++)
    for (int j = 0; j < f; j++) {
      float g = GU[r * 2 * f + j];
      Y[r * f + j] = g / (1.0f + expf(-g)) * GU[r * 2 * f + f + j];
    }
  return QVL_OK;
}

int cpu_gelu_erf(qvl_backend *b, void *y, const void *x, int64_t n) {
  (void)b;
  float *Y = y;
  const float *X = x;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) Y[i] = 0.5f * X[i] * (1.0f + erff(X[i] * (float)M_SQRT1_2));
  return QVL_OK;
}

int cpu_gelu_tanh(qvl_backend *b, void *y, const void *x, int64_t n) {
  (void)b;
  float *Y = y;
  const float *X = x;
  const float k = 0.7978845608028654f; /* sqrt(2/pi) */
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float v = X[i];
    Y[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
  }
  return QVL_OK;
}

/* NeoX rotate_half: out[d] = x[d] cos[d] - x[d+h] sin[d] (d < h), x[d] cos[d] + x[d-h] sin[d] (d >= h). */
static void rotate(float *x, const float *cos, const float *sin, int head_dim) {
  int h = head_dim / 2;
  float tmp[512];
  memcpy(tmp, x, (size_t)head_dim * sizeof(float));
  for (int d = 0; d < h; d++) x[d] = tmp[d] * cos[d] - tmp[d + h] * sin[d];
  for (int d = h; d < head_dim; d++) x[d] = tmp[d] * cos[d] + tmp[d - h] * sin[d];
}

int cpu_rope_qk(qvl_backend *b, void *qkv, const float *cos, const float *sin, int64_t rows, int heads, int head_dim) {
  if (head_dim > 512 || head_dim % 2)
    return qvl_fail(b->err, QVL_ERR_UNSUPPORTED, "cpu rope: head_dim %d not supported", head_dim);
  float *Q = qkv;
  int64_t stride = 3 * (int64_t)heads * head_dim;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++)
    for (int part = 0; part < 2; part++) /* q, then k */
      for (int hh = 0; hh < heads; hh++)
        rotate(Q + r * stride + ((int64_t)part * heads + hh) * head_dim, cos + r * head_dim, sin + r * head_dim,
               head_dim);
  return QVL_OK;
}

int cpu_rope_tables(qvl_backend *b, float *cos, float *sin, const int32_t *pos, const int32_t *order, int64_t rows,
                    int head_dim, float theta) {
  if (head_dim > 1024 || head_dim % 4)
    return qvl_fail(b->err, QVL_ERR_UNSUPPORTED, "cpu rope tables: head_dim %d not supported", head_dim);
  vis_rope_tables(cos, sin, pos, order, rows, head_dim, theta);
  return QVL_OK;
}

int cpu_scatter_rows(qvl_backend *b, void *y, const void *x, const int32_t *idx, int64_t n, int64_t row_elems,
                     int accumulate) {
  (void)b;
  float *Y = y;
  const float *X = x;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float *dst = Y + (int64_t)idx[i] * row_elems;
    const float *src = X + i * row_elems;
    for (int64_t c = 0; c < row_elems; c++) dst[c] = accumulate ? dst[c] + src[c] : src[c];
  }
  return QVL_OK;
}

int cpu_gather_rows(qvl_backend *b, void *y, const void *x, const int32_t *idx, int64_t n, int64_t row_elems) {
  (void)b;
  float *Y = y;
  const float *X = x;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++)
    memcpy(Y + i * row_elems, X + (int64_t)idx[i] * row_elems, (size_t)row_elems * sizeof(float));
  return QVL_OK;
}

int cpu_add_bilinear(qvl_backend *b, void *h, const void *table, const int32_t *idx, const float *w, int64_t rows,
                     int dim) {
  (void)b;
  float *H = h;
  const float *T = table;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *t0 = T + (int64_t)idx[r * 4 + 0] * dim, *t1 = T + (int64_t)idx[r * 4 + 1] * dim;
    const float *t2 = T + (int64_t)idx[r * 4 + 2] * dim, *t3 = T + (int64_t)idx[r * 4 + 3] * dim;
    const float *wr = w + r * 4;
    for (int j = 0; j < dim; j++) H[r * dim + j] += ((t0[j] * wr[0] + t1[j] * wr[1]) + t2[j] * wr[2]) + t3[j] * wr[3];
  }
  return QVL_OK;
}
