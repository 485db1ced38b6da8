/* cuda_backend.c - the bf16 CUDA backend: memory, conversions and the op table. Kernels live one family per
 * .cu file (cuda_ops.h); GEMMs in gemm.c (cuBLASLt); attention in attention.c (attn_vit.cu or cuDNN, sdpa.c). Every op is queued on one
 * stream; the host synchronises only in downloads and allocations. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"

int cuda_check(qvl_backend *b, cudaError_t e, const char *what) {
  if (e == cudaSuccess) return QVL_OK;
  (void)cudaGetLastError(); /* a refused call (an allocation) must not fail the next launch's check */
  return qvl_fail(b->err, e == cudaErrorMemoryAllocation ? QVL_ERR_NOMEM : QVL_ERR_DEVICE, "cuda: %s: %s", what,
                  cudaGetErrorString(e));
}

void cuda_mark_begin(qvl_backend *b, int cat) {
  cuda_ctx *c = b->ctx;
  if (!c->profiling) return;
  if (c->n_marks == c->cap_marks) {
    int cap = c->cap_marks ? 2 * c->cap_marks : 1024;
    struct cuda_mark *m = realloc(c->marks, (size_t)cap * sizeof *m);
    if (!m) return;
    for (int i = c->cap_marks; i < cap; i++) cudaEventCreate(&m[i].a), cudaEventCreate(&m[i].z);
    c->marks = m, c->cap_marks = cap;
  }
  c->marks[c->n_marks].cat = cat;
  snprintf(c->marks[c->n_marks].name, sizeof c->marks[c->n_marks].name, "%s",
           cat == 0 ? "gemm" : cat == 1 ? "attention" : "other");
  cudaEventRecord(c->marks[c->n_marks].a, c->stream);
}

void cuda_mark_label(qvl_backend *b, const char *fmt, ...) {
  cuda_ctx *c = b->ctx;
  if (!c->profiling || c->n_marks >= c->cap_marks) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->marks[c->n_marks].name, sizeof c->marks[c->n_marks].name, fmt, ap);
  va_end(ap);
}

/* QVL_PROFILE=2: device time per op name since the last profile call, largest first, on stderr. */
static void profile_table(const cuda_ctx *c, const float *t) {
  struct row { const char *name; int calls; double ms; } rows[128];
  int n = 0;
  for (int i = 0; i < c->n_marks; i++) {
    int j = 0;
    while (j < n && strcmp(rows[j].name, c->marks[i].name)) j++;
    if (j == n && n == 128) continue;
    if (j == n) rows[n++] = (struct row){c->marks[i].name, 0, 0};
    rows[j].calls++, rows[j].ms += t[i];
  }
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && rows[j].ms > rows[j - 1].ms; j--) {
      struct row r = rows[j];
      rows[j] = rows[j - 1], rows[j - 1] = r;
    }
  fprintf(stderr, "qvl profile: %d ops since the last profile call\n", c->n_marks);
  for (int i = 0; i < n; i++)
    fprintf(stderr, "qvl profile: %-40s %7d calls %10.3f ms\n", rows[i].name, rows[i].calls, rows[i].ms);
}

void cuda_mark_end(qvl_backend *b) {
  cuda_ctx *c = b->ctx;
  if (c->profiling && c->n_marks < c->cap_marks) cudaEventRecord(c->marks[c->n_marks++].z, c->stream);
}

static int cu_profile(qvl_backend *b, double ms[3]) {
  cuda_ctx *c = b->ctx;
  ms[0] = ms[1] = ms[2] = 0;
  int rc = cuda_check(b, cudaStreamSynchronize(c->stream), "profile");
  float *t = calloc((size_t)c->n_marks + 1, sizeof(float));
  for (int i = 0; !rc && t && i < c->n_marks; i++) {
    cudaEventElapsedTime(&t[i], c->marks[i].a, c->marks[i].z);
    ms[c->marks[i].cat] += t[i];
  }
  if (!rc && t && c->profiling == 2) profile_table(c, t);
  free(t);
  c->n_marks = 0;
  return rc;
}

static int launched(qvl_backend *b, int rc, const char *op) {
  if (rc == QVL_OK) return QVL_OK;
  return qvl_fail(b->err, rc, "cuda %s: kernel launch failed: %s", op, cudaGetErrorString(cudaGetLastError()));
}

int cuda_scratch(qvl_backend *b, size_t bytes) {
  cuda_ctx *c = b->ctx;
  if (bytes <= c->scratch_bytes) return QVL_OK;
  cudaStreamSynchronize(c->stream);
  cudaFree(c->scratch);
  b->mem_held -= (int64_t)c->scratch_bytes;
  c->scratch = NULL, c->scratch_bytes = 0;
  int rc = cuda_check(b, cudaMalloc(&c->scratch, bytes), "scratch allocation");
  if (!rc) {
    c->scratch_bytes = bytes;
    b->mem_held += (int64_t)bytes;
    if (b->mem_held > b->mem_peak) b->mem_peak = b->mem_held;
  }
  return rc;
}

/* ---- memory ------------------------------------------------------------------------------------ */

static int push_block(struct cuda_block **list, int *n, int *cap, void *p, size_t bytes) {
  if (*n == *cap) {
    int c = *cap ? 2 * *cap : 256;
    struct cuda_block *q = realloc(*list, (size_t)c * sizeof *q);
    if (!q) return QVL_ERR_NOMEM;
    *list = q, *cap = c;
  }
  (*list)[(*n)++] = (struct cuda_block){p, bytes};
  return QVL_OK;
}

/* Batches of one shape ask for the same buffer sizes every time: freed blocks are kept and handed back by
 * exact size, so a steady workload never calls cudaMalloc/cudaFree (both synchronise the device). */
static int cu_alloc(qvl_backend *b, void **out, size_t bytes) {
  cuda_ctx *c = b->ctx;
  bytes = (bytes + 255) / 256 * 256;
  if (!bytes) bytes = 256;
  *out = NULL;
  for (int i = c->n_cache - 1; i >= 0 && !*out; i--)
    if (c->cache[i].bytes == bytes) {
      *out = c->cache[i].p;
      c->cache[i] = c->cache[--c->n_cache];
    }
  if (!*out) {
    int rc = cuda_check(b, cudaMalloc(out, bytes), "allocation");
    if (rc) return rc;
    b->mem_held += (int64_t)bytes;
    if (b->mem_held > b->mem_peak) b->mem_peak = b->mem_held;
  }
  if (push_block(&c->live, &c->n_live, &c->cap_live, *out, bytes)) {
    cudaFree(*out);
    *out = NULL;
    return qvl_fail(b->err, QVL_ERR_NOMEM, "cuda: cannot track an allocation");
  }
  return QVL_OK;
}

static void cu_free(qvl_backend *b, void *p) {
  cuda_ctx *c = b->ctx;
  for (int i = c->n_live - 1; p && i >= 0; i--)
    if (c->live[i].p == p) {
      struct cuda_block blk = c->live[i];
      c->live[i] = c->live[--c->n_live];
      if (push_block(&c->cache, &c->n_cache, &c->cap_cache, blk.p, blk.bytes)) {
        cudaFree(blk.p);
        b->mem_held -= (int64_t)blk.bytes;
      }
      return;
    }
}

/* Conversions go through a fixed f32 staging chunk in device memory, reused in stream order (each copy into it
 * queues behind the kernel that read the previous chunk), so a 2 GB tensor needs no 2 GB of scratch. */
enum { CONVERT_CHUNK = 1 << 20 }; /* floats: 4 MB */

static int cu_upload_f32(qvl_backend *b, void *dst, const float *src, int64_t n) {
  cuda_ctx *c = b->ctx;
  int rc = cuda_scratch(b, (size_t)CONVERT_CHUNK * sizeof(float));
  for (int64_t i = 0; !rc && i < n; i += CONVERT_CHUNK) {
    int64_t k = n - i < CONVERT_CHUNK ? n - i : CONVERT_CHUNK;
    rc = cuda_check(b, cudaMemcpyAsync(c->scratch, src + i, (size_t)k * 4, cudaMemcpyHostToDevice, c->stream),
                    "upload");
    if (!rc) rc = launched(b, cuda_f32_to_bf16((uint16_t *)dst + i, c->scratch, k, c->stream), "f32_to_bf16");
  }
  return rc;
}

static int cu_download_f32(qvl_backend *b, float *dst, const void *src, int64_t n) {
  cuda_ctx *c = b->ctx;
  int rc = cuda_scratch(b, (size_t)CONVERT_CHUNK * sizeof(float));
  for (int64_t i = 0; !rc && i < n; i += CONVERT_CHUNK) {
    int64_t k = n - i < CONVERT_CHUNK ? n - i : CONVERT_CHUNK;
    rc = launched(b, cuda_bf16_to_f32(c->scratch, (const uint16_t *)src + i, k, c->stream), "bf16_to_f32");
    if (!rc) rc = cuda_check(b, cudaMemcpyAsync(dst + i, c->scratch, (size_t)k * 4, cudaMemcpyDeviceToHost,
                                                c->stream), "download");
  }
  return rc ? rc : cuda_check(b, cudaStreamSynchronize(c->stream), "download");
}

static int cu_upload(qvl_backend *b, void *dst, const void *src, size_t bytes) {
  cuda_ctx *c = b->ctx;
  /* pageable src is staged before the call returns (the driver may wait for the stream to do so), so the caller
   * may free it; pinned src (cu_host_alloc) is copied asynchronously. Either way in stream order. */
  return cuda_check(b, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "upload");
}

/* Every block kept for reuse goes back to the device (a plan of another size will not want them). */
static void cu_trim(qvl_backend *b) {
  cuda_ctx *c = b->ctx;
  cudaStreamSynchronize(c->stream);
  for (int i = 0; i < c->n_cache; i++) {
    cudaFree(c->cache[i].p);
    b->mem_held -= (int64_t)c->cache[i].bytes;
  }
  c->n_cache = 0;
}

static int cu_host_alloc(qvl_backend *b, void **out, size_t bytes) {
  *out = NULL;
  return cuda_check(b, cudaHostAlloc(out, bytes ? bytes : 1, cudaHostAllocDefault), "pinned host allocation");
}

static void cu_host_free(qvl_backend *b, void *p) {
  (void)b;
  if (p) cudaFreeHost(p);
}

static int cu_download(qvl_backend *b, void *dst, const void *src, size_t bytes) {
  cuda_ctx *c = b->ctx;
  int rc = cuda_check(b, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download");
  return rc ? rc : cuda_check(b, cudaStreamSynchronize(c->stream), "download");
}

static int cu_copy(qvl_backend *b, void *dst, const void *src, size_t bytes) {
  cuda_ctx *c = b->ctx;
  return cuda_check(b, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream), "copy");
}

static int cu_sync(qvl_backend *b) {
  return cuda_check(b, cudaStreamSynchronize(((cuda_ctx *)b->ctx)->stream), "synchronize");
}

static void cu_destroy(qvl_backend *b) {
  cuda_ctx *c = b->ctx;
  if (c) {
    cudaStreamSynchronize(c->stream);
    cuda_gemm_destroy(c);
    cuda_sdpa_destroy(c);
    cuda_attention_destroy(c);
    if (c->dnn) cudnnDestroy(c->dnn);
    if (c->lt) cublasLtDestroy(c->lt);
    for (int i = 0; i < c->cap_marks; i++) cudaEventDestroy(c->marks[i].a), cudaEventDestroy(c->marks[i].z);
    free(c->marks);
    for (int i = 0; i < c->n_live; i++) cudaFree(c->live[i].p);
    for (int i = 0; i < c->n_cache; i++) cudaFree(c->cache[i].p);
    free(c->live), free(c->cache);
    cudaFree(c->lt_ws);
    cudaFree(c->attn_ws);
    cudaFree(c->scratch);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
  }
  free(b);
}

/* ---- ops ------------------------------------------------------------------------------------------ */

#define STREAM(b) (((cuda_ctx *)(b)->ctx)->stream)
/* A small op, bracketed for the profile (category "other"). */
#define OTHER(b, call, op)         \
  do {                             \
    cuda_mark_begin(b, 2);         \
    cuda_mark_label(b, "%s", op);  \
    int rc_ = (call);              \
    cuda_mark_end(b);              \
    return launched(b, rc_, op);   \
  } while (0)

static int cu_rmsnorm(qvl_backend *b, void *y, const void *x, const void *w, int64_t rows, int dim, float eps) {
  OTHER(b, cuda_rmsnorm(y, x, w, rows, dim, eps, STREAM(b)), "rmsnorm");
}

static int cu_layernorm(qvl_backend *b, void *y, const void *x, const void *w, const void *bias, int64_t rows, int dim,
                        float eps) {
  OTHER(b, cuda_layernorm(y, x, w, bias, rows, dim, eps, STREAM(b)), "layernorm");
}

static int cu_add(qvl_backend *b, void *h, const void *x, int64_t n) {
  OTHER(b, cuda_add(h, x, n, STREAM(b)), "add");
}

static int cu_silu_mul(qvl_backend *b, void *y, const void *g, const void *u, int64_t n) {
  OTHER(b, cuda_silu_mul(y, g, u, n, STREAM(b)), "silu_mul");
}

static int cu_swiglu(qvl_backend *b, void *y, const void *gu, int64_t rows, int f) {
  OTHER(b, cuda_swiglu(y, gu, rows, f, STREAM(b)), "swiglu");
}

/* gemm_swiglu.cu, timed as a GEMM. A shape it refuses returns QVL_ERR_UNSUPPORTED without touching b->err, its
 * profile mark left open: dropped (cuda_mark_begin). */
static int cu_linear_swiglu(qvl_backend *b, void *y, const void *x, const void *w, const void *bias, int64_t rows,
                            int f, int k) {
  cuda_mark_begin(b, 0);
  cuda_mark_label(b, "linear_swiglu n %d k %d%s", 2 * f, k, bias ? " bias" : "");
  int rc = cuda_linear_swiglu(y, x, w, bias, rows, f, k, STREAM(b));
  if (rc == QVL_ERR_UNSUPPORTED) return rc;
  cuda_mark_end(b);
  if (rc == QVL_ERR_LIMIT || rc == QVL_ERR_INVALID_ARG)
    return qvl_fail(b->err, rc, "cuda linear_swiglu: %lld rows, f %d, k %d: %s", (long long)rows, f, k,
                    qvl_status_name(rc));
  return launched(b, rc, "linear_swiglu");
}

static int cu_gelu_erf(qvl_backend *b, void *y, const void *x, int64_t n) {
  OTHER(b, cuda_gelu(y, x, n, 0, STREAM(b)), "gelu");
}

static int cu_gelu_tanh(qvl_backend *b, void *y, const void *x, int64_t n) {
  OTHER(b, cuda_gelu(y, x, n, 1, STREAM(b)), "gelu_tanh");
}

static int cu_rope_tables(qvl_backend *b, float *cos, float *sin, const int32_t *pos, const int32_t *order,
                          int64_t rows, int head_dim, float theta) {
  OTHER(b, cuda_rope_tables(cos, sin, pos, order, rows, head_dim, theta, STREAM(b)), "rope_tables");
}

static int cu_scatter_rows(qvl_backend *b, void *y, const void *x, const int32_t *idx, int64_t n, int64_t row_elems,
                           int accumulate) {
  OTHER(b, cuda_scatter_rows(y, x, idx, n, row_elems, accumulate, STREAM(b)), "scatter_rows");
}

static int cu_qkv_to_cache(qvl_backend *b, void *q, void *kc, void *vc, const void *qkv, const void *q_norm,
                           const void *k_norm, const float *cos, const float *sin, const int32_t *slot, int64_t rows,
                           int heads, int kv_heads, int head_dim, float eps) {
  cuda_mark_begin(b, 2);
  int rc = cuda_qkv_to_cache(q, kc, vc, qkv, q_norm, k_norm, cos, sin, slot, rows, heads, kv_heads, head_dim, eps,
                             STREAM(b));
  cuda_mark_end(b);
  if (rc == QVL_ERR_UNSUPPORTED || rc == QVL_ERR_LIMIT)
    return qvl_fail(b->err, rc, "cuda qkv_to_cache: head_dim %d, %d heads over %d kv heads, %lld rows not supported",
                    head_dim, heads, kv_heads, (long long)rows);
  return launched(b, rc, "qkv_to_cache");
}

static int cu_attention_paged(qvl_backend *b, void *out, const void *q, const void *kc, const void *vc,
                              const int32_t *cu_q, const int32_t *kv_len, const int32_t *table, int n_seq,
                              int max_blocks, int block_size, int64_t q_rows, int max_q, int max_kv, int heads,
                              int kv_heads, int head_dim, float scale) {
  cuda_ctx *c = b->ctx;
  cuda_mark_begin(b, 1);
  int rc = cuda_attention_paged(out, q, kc, vc, cu_q, kv_len, table, n_seq, max_blocks, block_size, q_rows, max_q,
                                max_kv, heads, kv_heads, head_dim, scale, c->attn_ws, CUDA_ATTN_WS, c->n_sm, c->stream);
  cuda_mark_end(b);
  if (rc == QVL_ERR_UNSUPPORTED || rc == QVL_ERR_LIMIT)
    return qvl_fail(b->err, rc,
                    "cuda attention_paged: head_dim %d (multiples of 8 up to 128), %d heads over %d kv heads, block "
                    "size %d, %d sequences of up to %d queries not supported",
                    head_dim, heads, kv_heads, block_size, n_seq, max_q);
  return launched(b, rc, "attention_paged");
}

static int cu_argmax_rows(qvl_backend *b, int32_t *out, const void *x, int64_t rows, int n) {
  OTHER(b, cuda_argmax_rows(out, x, rows, n, STREAM(b)), "argmax_rows");
}

static int cu_gather_rows(qvl_backend *b, void *y, const void *x, const int32_t *idx, int64_t n, int64_t row_elems) {
  OTHER(b, cuda_gather_rows(y, x, idx, n, row_elems, STREAM(b)), "gather_rows");
}

static int cu_add_bilinear(qvl_backend *b, void *h, const void *table, const int32_t *idx, const float *w,
                           int64_t rows, int dim) {
  OTHER(b, cuda_add_bilinear(h, table, idx, w, rows, dim, STREAM(b)), "add_bilinear");
}

/* Graphs: stream capture of the ops queued on the backend's stream. Thread-local capture mode, so that other
 * threads' CUDA calls (allocation, other engines) are neither captured nor forbidden. */
static int cu_graph_begin(qvl_backend *b) {
  cuda_ctx *c = b->ctx;
  return cuda_check(b, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal), "graph capture begin");
}

static int cu_graph_end(qvl_backend *b, void **graph) {
  cuda_ctx *c = b->ctx;
  cudaGraph_t g = NULL;
  cudaGraphExec_t x = NULL;
  *graph = NULL;
  int rc = cuda_check(b, cudaStreamEndCapture(c->stream, &g), "graph capture end");
  if (!rc) rc = cuda_check(b, cudaGraphInstantiate(&x, g, 0), "graph instantiate");
  if (g) cudaGraphDestroy(g);
  if (!rc) *graph = x;
  return rc;
}

static int cu_graph_launch(qvl_backend *b, void *graph) {
  cuda_ctx *c = b->ctx;
  return cuda_check(b, cudaGraphLaunch((cudaGraphExec_t)graph, c->stream), "graph launch");
}

static void cu_graph_free(qvl_backend *b, void *graph) {
  (void)b;
  if (graph) cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

static int cu_init(qvl_backend *b, cuda_ctx *c, int dev) {
  int rc;
  c->dev = dev;
  c->lt_ws_bytes = 32u << 20;
  struct cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, dev) == cudaSuccess) snprintf(b->device, sizeof b->device, "%.95s", prop.name);
  if ((rc = cuda_check(b, cudaSetDevice(dev), "set device")) ||
      (rc = cuda_check(b, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "stream")) ||
      (rc = cuda_check(b, cudaMalloc(&c->lt_ws, c->lt_ws_bytes), "cuBLASLt workspace")) ||
      (rc = cuda_check(b, cudaMalloc((void **)&c->attn_ws, CUDA_ATTN_WS), "attention workspace")) ||
      (rc = cuda_check(b, cudaDeviceGetAttribute(&c->n_sm, cudaDevAttrMultiProcessorCount, dev), "SM count")))
    return rc;
  if (cuda_attention_paged_init() || cuda_attn_vit_init())
    return cuda_check(b, cudaGetLastError(), "attention kernel attributes");
  c->wgmma = cuda_attn_vit_wgmma_init() == QVL_OK; /* not on this device: attention.c leaves the candidate out */
  if (!c->wgmma) (void)cudaGetLastError();
  /* gemm_swiglu.cu: where it does not run (not Hopper), or with QVL_FUSED_SWIGLU=0 (read here, once), linear_swiglu
   * is NULL and the models run linear + swiglu */
  const char *sw = getenv("QVL_FUSED_SWIGLU");
  c->fused_swiglu = cuda_linear_swiglu_init() == QVL_OK && !(sw && !strcmp(sw, "0"));
  (void)cudaGetLastError();
  if (cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS)
    return qvl_fail(b->err, QVL_ERR_DEVICE, "cuda: cublasLtCreate failed");
  cudnnStatus_t st = cudnnCreate(&c->dnn);
  if (st == CUDNN_STATUS_SUCCESS) st = cudnnSetStream(c->dnn, c->stream);
  if (st != CUDNN_STATUS_SUCCESS)
    return qvl_fail(b->err, QVL_ERR_DEVICE, "cuda: cuDNN: %s", cudnnGetErrorString(st));
  return QVL_OK;
}

int qvl_backend_cuda_create(qvl_backend **out, int dev, qvl_err *err) {
  qvl_backend *b = calloc(1, sizeof *b);
  cuda_ctx *c = calloc(1, sizeof *c);
  *out = b;
  if (!b || !c) {
    free(c);
    return qvl_fail(err, QVL_ERR_NOMEM, "cuda: cannot allocate the backend");
  }
  int n = qvl_cuda_device_count();
  b->ctx = c, b->err = err, b->name = "cuda", b->elem_bytes = 2;
  b->destroy = cu_destroy;
  if (dev < 0 || dev >= n) return qvl_fail(err, QVL_ERR_DEVICE, "cuda: device %d requested, %d present", dev, n);
  int rc = cu_init(b, c, dev);
  if (rc) return rc;
  b->alloc = cu_alloc, b->free = cu_free, b->upload_f32 = cu_upload_f32, b->download_f32 = cu_download_f32;
  b->upload = cu_upload, b->download = cu_download, b->copy = cu_copy, b->sync = cu_sync, b->trim = cu_trim, b->host_alloc = cu_host_alloc;
  b->host_free = cu_host_free;
  b->graph_begin = cu_graph_begin, b->graph_end = cu_graph_end, b->graph_launch = cu_graph_launch;
  b->graph_free = cu_graph_free;
  const char *prof = getenv("QVL_PROFILE");
  c->profiling = prof && (*prof == '1' || *prof == '2') ? *prof - '0' : 0;
  if (c->profiling) b->profile = cu_profile;
  b->linear = cuda_linear, b->linear_record = cuda_linear_record, b->linear_tune = cuda_linear_tune;
  b->rmsnorm = cu_rmsnorm, b->layernorm = cu_layernorm, b->add = cu_add;
  b->silu_mul = cu_silu_mul, b->swiglu = cu_swiglu, b->gelu_erf = cu_gelu_erf, b->gelu_tanh = cu_gelu_tanh;
  b->linear_swiglu = c->fused_swiglu ? cu_linear_swiglu : NULL;
  b->rope_tables = cu_rope_tables;
  b->scatter_rows = cu_scatter_rows;
  b->attention_prepare = cuda_attention_prepare, b->attention = cuda_attention;
  b->attention_free = cuda_attention_free, b->gather_rows = cu_gather_rows, b->add_bilinear = cu_add_bilinear;
  b->qkv_to_cache = cu_qkv_to_cache, b->attention_paged = cu_attention_paged, b->argmax_rows = cu_argmax_rows;
  return QVL_OK;
}
