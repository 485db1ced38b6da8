/* sdpa.c - non-causal attention over packed ragged sequences through cuDNN's fused SDPA (the unified
 * SDPA_FWD operation of the C backend API, cuDNN >= 9.15; ../shared/reference/sdpa_c.cu shows the calls).
 *
 * q, k, v are read in place from the QKV GEMM output [N][3][H][D] (token stride 3HD, ragged offsets
 * cu[i]*3HD elements); o is written [N][H][D]. When cuDNN refuses the interleaved strides, q/k/v are first
 * copied to contiguous [N][H][D] buffers. Plans are cached per bucket: the sequence count rounded up to a
 * power of two and the longest sequence to a multiple of 64; unused slots get length 0 (legal).
 * When every sequence has the same length L, a multiple of 64 (whole 64-token windows of Qwen2.5-VL, a batch
 * of same-size images), the call is a dense batched [n, H, L, D] one instead: no ragged offsets, faster
 * (../shared/research/kernels.md §1a), and the plan is keyed by the exact (n, L). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"

enum { U_Q = 1, U_K, U_V, U_O, U_SCALE, U_SLQ, U_SLKV, U_RQ, U_RK, U_RV, U_RO, N_DESC = 16 };

struct sdpa_plan {
  int b, s, heads, hd, packed, dense; /* the bucket */
  cudnnBackendDescriptor_t plan, desc[N_DESC];
  int n_desc;
  int64_t ws_bytes;
};

static int dnn_fail(qvl_backend *b, cudnnStatus_t st, const char *what) {
  char m[256];
  cudnnGetLastErrorString(m, sizeof m);
  return qvl_fail(b->err, QVL_ERR_DEVICE, "cuda attention: %s: %s%s%s", what, cudnnGetErrorString(st), *m ? ": " : "",
                  m);
}

#define DN(call, what)                                      \
  do {                                                      \
    cudnnStatus_t st_ = (call);                             \
    if (st_ != CUDNN_STATUS_SUCCESS) return dnn_fail(b, st_, what); \
  } while (0)

static int tensor(qvl_backend *b, sdpa_plan *p, cudnnBackendDescriptor_t *t, int64_t uid, cudnnDataType_t dt,
                  const int64_t *dims, const int64_t *strides, int by_value, cudnnBackendDescriptor_t ragged) {
  int64_t align = 16;
  DN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, t), "tensor descriptor");
  p->desc[p->n_desc++] = *t;
  DN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt), "tensor dtype");
  DN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims), "tensor dims");
  DN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides), "tensor strides");
  DN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), "tensor uid");
  DN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align), "tensor alignment");
  if (by_value) {
    bool v = true;
    DN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &v), "by-value scale");
  }
  if (ragged)
    DN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ragged),
       "ragged offsets");
  DN(cudnnBackendFinalize(*t), "tensor finalize");
  return QVL_OK;
}

/* The SDPA operation over this bucket's descriptors. */
static int sdpa_op(qvl_backend *b, sdpa_plan *p, cudnnBackendDescriptor_t *op) {
  int64_t H = p->heads, D = p->hd, qs = p->packed ? 3 * H * D : H * D, S = p->s;
  int64_t dims[4] = {p->b, H, S, D}, s_in[4] = {qs * (p->dense ? S : 1), D, qs, 1};
  int64_t s_out[4] = {H * D * (p->dense ? S : 1), D, H * D, 1};
  int64_t one[4] = {1, 1, 1, 1}, dr[4] = {p->b + 1, 1, 1, 1}, dsl[4] = {p->b, 1, 1, 1};
  cudnnBackendDescriptor_t r[4] = {NULL, NULL, NULL, NULL}, t[5], sl[2] = {NULL, NULL};
  for (int i = 0; i < 4 && !p->dense; i++)
    if (tensor(b, p, &r[i], U_RQ + i, CUDNN_DATA_INT64, dr, one, 0, NULL)) return b->err->code;
  for (int i = 0; i < 2 && !p->dense; i++)
    if (tensor(b, p, &sl[i], U_SLQ + i, CUDNN_DATA_INT32, dsl, one, 0, NULL)) return b->err->code;
  for (int i = 0; i < 4; i++)
    if (tensor(b, p, &t[i], U_Q + i, CUDNN_DATA_BFLOAT16, dims, i == 3 ? s_out : s_in, 0, r[i])) return b->err->code;
  if (tensor(b, p, &t[4], U_SCALE, CUDNN_DATA_FLOAT, one, one, 1, NULL)) return b->err->code;
  DN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, op), "sdpa op");
  p->desc[p->n_desc++] = *op;
  cudnnBackendAttributeName_t names[] = {
    CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC,
    CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC,
    CUDNN_ATTR_OPERATION_SDPA_FWD_SEQ_LEN_QDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_SEQ_LEN_KVDESC};
  cudnnBackendDescriptor_t vals[] = {t[0], t[1], t[2], t[3], t[4], sl[0], sl[1]};
  for (int i = 0; i < (p->dense ? 5 : 7); i++)
    DN(cudnnBackendSetAttribute(*op, names[i], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &vals[i]), "sdpa attribute");
  DN(cudnnBackendFinalize(*op), "sdpa op finalize");
  return QVL_OK;
}

static int sdpa_build(qvl_backend *b, sdpa_plan *p) {
  cuda_ctx *c = b->ctx;
  cudnnBackendDescriptor_t op, graph, heur, cfg;
  if (sdpa_op(b, p, &op)) return b->err->code;
  DN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph), "graph");
  p->desc[p->n_desc++] = graph;
  DN(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op), "graph ops");
  DN(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &c->dnn), "graph handle");
  DN(cudnnBackendFinalize(graph), "graph finalize");
  cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
  int64_t n_cfg = 0;
  for (int i = 0; i < 2 && !n_cfg; i++) {
    DN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur), "heuristics");
    p->desc[p->n_desc++] = heur;
    DN(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph),
       "heuristics graph");
    DN(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &modes[i]), "heur mode");
    DN(cudnnBackendFinalize(heur), "heuristics finalize");
    DN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfg), "engine config");
    p->desc[p->n_desc++] = cfg;
    DN(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n_cfg, &cfg),
       "heuristics results");
  }
  if (!n_cfg) return qvl_fail(b->err, QVL_ERR_DEVICE, "cuda attention: cuDNN has no engine for this layout");
  DN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p->plan), "plan");
  DN(cudnnBackendSetAttribute(p->plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &c->dnn), "plan handle");
  DN(cudnnBackendSetAttribute(p->plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg),
     "plan config");
  DN(cudnnBackendFinalize(p->plan), "plan finalize");
  int64_t got = 0;
  DN(cudnnBackendGetAttribute(p->plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got,
                              &p->ws_bytes), "workspace size");
  return QVL_OK;
}

static void plan_free(sdpa_plan *p) {
  if (p->plan) cudnnBackendDestroyDescriptor(p->plan);
  for (int i = 0; i < p->n_desc; i++) cudnnBackendDestroyDescriptor(p->desc[i]);
  memset(p, 0, sizeof *p);
}

static sdpa_plan *plan_get(qvl_backend *b, int nb, int s, int heads, int hd, int packed, int dense) {
  cuda_ctx *c = b->ctx;
  for (int i = 0; i < c->n_plans; i++) {
    sdpa_plan *p = &c->plans[i];
    if (p->b == nb && p->s == s && p->heads == heads && p->hd == hd && p->packed == packed && p->dense == dense)
      return p;
  }
  if (c->n_plans == c->cap_plans) {
    int cap = c->cap_plans ? 2 * c->cap_plans : 16;
    sdpa_plan *np = realloc(c->plans, (size_t)cap * sizeof *np);
    if (!np) return NULL;
    c->plans = np, c->cap_plans = cap;
  }
  sdpa_plan *p = &c->plans[c->n_plans];
  memset(p, 0, sizeof *p);
  p->b = nb, p->s = s, p->heads = heads, p->hd = hd, p->packed = packed, p->dense = dense;
  if (sdpa_build(b, p)) {
    plan_free(p);
    return NULL;
  }
  c->n_plans++;
  return p;
}

/* Device metadata at the start of scratch: seq lens [nb] int32, offsets (q/k/v) and (o) [nb + 1] int64. */
static int upload_meta(qvl_backend *b, const int32_t *cu, int n_seq, int nb, int64_t qkv_row, int64_t o_row,
                       size_t extra, void **meta) {
  size_t lens_bytes = ((size_t)nb * 4 + 15) / 16 * 16, offs = (size_t)(nb + 1) * 8;
  size_t bytes = lens_bytes + 2 * offs;
  char *host = malloc(bytes);
  if (!host) return qvl_fail(b->err, QVL_ERR_NOMEM, "cuda attention: out of memory");
  int32_t *lens = (int32_t *)host;
  int64_t *oq = (int64_t *)(host + lens_bytes), *oo = oq + nb + 1;
  for (int i = 0; i <= nb; i++) {
    int j = i < n_seq ? i : n_seq;
    if (i < nb) lens[i] = i < n_seq ? cu[i + 1] - cu[i] : 0;
    oq[i] = (int64_t)cu[j] * qkv_row;
    oo[i] = (int64_t)cu[j] * o_row;
  }
  /* Queued on the stream: the previous layer's attention may still be reading the old metadata. A pageable
   * source is staged before cudaMemcpyAsync returns, so host can be freed right away. */
  int rc = cuda_scratch(b, bytes + extra);
  cuda_ctx *c = b->ctx;
  if (!rc) rc = cuda_check(b, cudaMemcpyAsync(c->scratch, host, bytes, cudaMemcpyHostToDevice, c->stream),
                           "attention metadata upload");
  free(host);
  *meta = ((cuda_ctx *)b->ctx)->scratch;
  return rc;
}

static int next_pow2(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

int cuda_attention(qvl_backend *b, void *out, const void *qkv, const int32_t *cu, int n_seq, int heads, int head_dim,
                   float scale) {
  cuda_ctx *c = b->ctx;
  int max_s = 0, dense = n_seq > 1 && cu[1] % 64 == 0;
  for (int i = 0; i < n_seq; i++) {
    max_s = cu[i + 1] - cu[i] > max_s ? cu[i + 1] - cu[i] : max_s;
    dense &= cu[i + 1] - cu[i] == cu[1];
  }
  if (!max_s) return QVL_OK;
  int s = (max_s + 63) / 64 * 64, packed = 1, nb = dense ? n_seq : next_pow2(n_seq);
  int64_t HD = (int64_t)heads * head_dim, rows = cu[n_seq];
  sdpa_plan *p = plan_get(b, nb, s, heads, head_dim, 1, dense);
  if (!p) { /* interleaved q/k/v refused: fall back to contiguous copies */
    qvl_err_clear(b->err);
    packed = 0;
    if (!(p = plan_get(b, nb, s, heads, head_dim, 0, dense))) return b->err->code ? b->err->code : QVL_ERR_NOMEM;
  }
  size_t lens_bytes = ((size_t)nb * 4 + 15) / 16 * 16, meta_bytes = lens_bytes + 2 * (size_t)(nb + 1) * 8;
  size_t meta_pad = (meta_bytes + 255) / 256 * 256, split = packed ? 0 : (size_t)(3 * rows * HD) * 2;
  void *meta = NULL;
  int rc = upload_meta(b, cu, n_seq, nb, packed ? 3 * HD : HD, HD, meta_pad - meta_bytes + split + (size_t)p->ws_bytes,
                       &meta);
  if (rc) return rc;
  char *base = meta;
  uint16_t *q = (uint16_t *)qkv, *k = q + HD, *v = q + 2 * HD;
  if (!packed) { /* contiguous q, k, v after the metadata */
    uint16_t *sq = (uint16_t *)(base + meta_pad);
    for (int i = 0; i < 3; i++)
      if ((rc = cuda_copy_rows(sq + (int64_t)i * rows * HD, HD, (const uint16_t *)qkv + i * HD, 3 * HD, rows, HD,
                               c->stream)))
        return qvl_fail(b->err, rc, "cuda attention: q/k/v split failed");
    q = sq, k = sq + rows * HD, v = sq + 2 * rows * HD;
  }
  void *ws = p->ws_bytes ? base + meta_pad + split : NULL;
  void *lens = base, *oq = base + lens_bytes, *oo = base + lens_bytes + (size_t)(nb + 1) * 8;
  int64_t uids[] = {U_Q, U_K, U_V, U_O, U_SCALE, U_SLQ, U_SLKV, U_RQ, U_RK, U_RV, U_RO};
  void *ptrs[] = {q, k, v, out, &scale, lens, lens, oq, oq, oq, oo};
  cudnnBackendDescriptor_t vp;
  DN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp), "variant pack");
  int n_ptrs = dense ? 5 : 11; /* dense: no sequence lengths, no ragged offsets */
  cudnnStatus_t st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n_ptrs,
                                              ptrs);
  if (!st) st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n_ptrs, uids);
  if (!st) st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
  if (!st) st = cudnnBackendFinalize(vp);
  cuda_mark_begin(b, 1);
  if (!st) st = cudnnBackendExecute(c->dnn, p->plan, vp);
  cuda_mark_end(b);
  cudnnBackendDestroyDescriptor(vp);
  return st ? dnn_fail(b, st, "execute") : QVL_OK;
}

void cuda_sdpa_destroy(cuda_ctx *c) {
  for (int i = 0; i < c->n_plans; i++) plan_free(&c->plans[i]);
  free(c->plans);
}
