/* cpu_backend.c - the f32 reference backend: memory is host memory, buffers are float arrays.
 * It exists to be right (it is the truth the CUDA backend is tested against), not fast: OpenMP over
 * rows and OpenBLAS sgemm. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"

static int cpu_alloc(qvl_backend *b, void **out, size_t bytes) {
  *out = malloc(bytes ? bytes : 1);
  return *out ? QVL_OK : qvl_fail(b->err, QVL_ERR_NOMEM, "cpu: cannot allocate %zu bytes", bytes);
}

static void cpu_free(qvl_backend *b, void *p) {
  (void)b;
  free(p);
}

static void cpu_trim(qvl_backend *b) { (void)b; }

static int cpu_host_alloc(qvl_backend *b, void **out, size_t bytes) { return cpu_alloc(b, out, bytes); }

static int cpu_upload_f32(qvl_backend *b, void *dst, const float *src, int64_t n) {
  (void)b;
  memcpy(dst, src, (size_t)n * sizeof(float));
  return QVL_OK;
}

static int cpu_download_f32(qvl_backend *b, float *dst, const void *src, int64_t n) {
  (void)b;
  memcpy(dst, src, (size_t)n * sizeof(float));
  return QVL_OK;
}

static int cpu_upload(qvl_backend *b, void *dst, const void *src, size_t bytes) {
  (void)b;
  memcpy(dst, src, bytes);
  return QVL_OK;
}

static int cpu_download(qvl_backend *b, void *dst, const void *src, size_t bytes) {
  (void)b;
  memcpy(dst, src, bytes);
  return QVL_OK;
}

static int cpu_copy(qvl_backend *b, void *dst, const void *src, size_t bytes) {
  (void)b;
  memmove(dst, src, bytes);
  return QVL_OK;
}

static int cpu_sync(qvl_backend *b) {
  (void)b;
  return QVL_OK;
}

static void cpu_destroy(qvl_backend *b) { free(b); }

int qvl_backend_cpu_create(qvl_backend **out, int n_threads, qvl_err *err) {
  qvl_backend *b = calloc(1, sizeof *b);
  *out = b;
  if (!b) return qvl_fail(err, QVL_ERR_NOMEM, "cpu: cannot allocate the backend");
  if (n_threads > 0) omp_set_num_threads(n_threads);
  b->name = "cpu";
  snprintf(b->device, sizeof b->device, "cpu, %d OpenMP threads", omp_get_max_threads());
  b->elem_bytes = sizeof(float);
  b->err = err;
  b->alloc = cpu_alloc;
  b->free = cpu_free;
  b->trim = cpu_trim;
  b->host_alloc = cpu_host_alloc;
  b->host_free = cpu_free;
  b->upload_f32 = cpu_upload_f32;
  b->download_f32 = cpu_download_f32;
  b->upload = cpu_upload;
  b->download = cpu_download;
  b->copy = cpu_copy;
  b->sync = cpu_sync;
  b->destroy = cpu_destroy;
  b->linear = cpu_linear;
  b->rmsnorm = cpu_rmsnorm;
  b->layernorm = cpu_layernorm;
  b->add = cpu_add;
  b->silu_mul = cpu_silu_mul;
  b->swiglu = cpu_swiglu;
  b->gelu_erf = cpu_gelu_erf;
  b->gelu_tanh = cpu_gelu_tanh;
  b->rope_tables = cpu_rope_tables;
  b->qkv_to_cache = cpu_qkv_to_cache;
  b->attention_paged = cpu_attention_paged;
  b->argmax_rows = cpu_argmax_rows;
  b->scatter_rows = cpu_scatter_rows;
  b->attention_prepare = cpu_attention_prepare;
  b->attention = cpu_attention;
  b->attention_free = cpu_attention_free;
  b->gather_rows = cpu_gather_rows;
  b->add_bilinear = cpu_add_bilinear;
  return QVL_OK;
}
