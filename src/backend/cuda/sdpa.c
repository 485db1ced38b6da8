/* sdpa.c - the cuDNN candidate of the CUDA attention op (attention.c chooses): non-causal attention over packed
 * ragged sequences through cuDNN's fused SDPA (the unified SDPA_FWD operation of the C backend API, cuDNN >= 9.15;
 * ../shared/reference/sdpa_c.cu shows the calls). q and k arrive already rotated (attention.c runs rope_qk first).
 *
 * q, k, v are read in place from the QKV GEMM output [N][3][H][D] (token stride 3HD, ragged offsets
 * cu[i]*3HD elements); o is written [N][H][D]. When cuDNN refuses the interleaved strides, q/k/v are first
 * copied to contiguous [N][H][D] buffers. Plans are cached per bucket: the sequence count rounded up to a
 * power of two and the longest sequence to a multiple of 64; unused slots get length 0 (legal).
 * When every sequence has the same length L, a multiple of 64 (whole 64-token windows of Qwen2.5-VL, a batch
 * of same-size images), a dense batched [n, H, L, D] plan keyed by the exact (n, L) is a second candidate, where
 * the caller allows it (attention.c: only for a shape class seen for the first time; a server's passes bring a new
 * count nearly every time, and every plan built is host time while the device waits).
 *
 * A plan is the first engine configuration of the heuristics (mode A, then FALLBACK) that finalizes. (Until
 * a4cd465 a plan of 16,384 tokens or more built every configuration within 2 s and timed them: on the H100, in
 * three runs of 8 buckets each (Qwen2.5-VL windows and full layers, Qwen3-VL 960x1280 and 512x512, dense and
 * ragged), the first was the fastest every time, by 5% to 2.2x; the others only cost build time.) Where a prepared
 * attention has both a dense and a ragged plan of at least 16,384 tokens, its first run outside graph capture
 * times each once on the real buffers and keeps the faster; smaller ones with equal lengths take the dense plan
 * alone. QVL_SDPA_LOG=1 prints the times; QVL_SDPA_TUNE=0 takes the dense plan where there is one, untimed.
 * cuda_sdpa_prepare does all host work; the device metadata (lengths, offsets) is derived on the device from
 * the uploaded boundaries (sdpa_meta.cu), so cuda_sdpa_run itself is one cudnnBackendExecute. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"

enum { U_Q = 1, U_K, U_V, U_O, U_SCALE, U_SLQ, U_SLKV, U_RQ, U_RK, U_RV, U_RO, N_DESC = 16, MAX_CFG = 16,
       TUNE_MIN_TOKENS = 16384 }; /* prepared attentions of fewer (slots x length) with equal lengths: dense alone */

struct sdpa_plan {
  int b, s, heads, hd, packed, dense; /* the bucket */
  cudnnBackendDescriptor_t plan, desc[N_DESC];
  int n_desc, tuned;
  int64_t ws_bytes;
  float best_ms; /* the plan's time when timed (0: not timed) */
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

/* The first engine configuration of the heuristics (mode A, then FALLBACK when A has none) that finalizes. */
static int sdpa_build(qvl_backend *b, sdpa_plan *p) {
  cuda_ctx *c = b->ctx;
  cudnnBackendDescriptor_t op, graph, heur, cfgs[MAX_CFG];
  if (sdpa_op(b, p, &op)) return b->err->code;
  DN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph), "graph");
  p->desc[p->n_desc++] = graph;
  DN(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op), "graph ops");
  DN(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &c->dnn), "graph handle");
  DN(cudnnBackendFinalize(graph), "graph finalize");
  cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
  cudnnStatus_t last = CUDNN_STATUS_SUCCESS;
  for (int i = 0; i < 2 && !p->plan; i++) {
    int64_t n_cfg = 0;
    DN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur), "heuristics");
    p->desc[p->n_desc++] = heur;
    DN(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph),
       "heuristics graph");
    DN(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &modes[i]), "heur mode");
    DN(cudnnBackendFinalize(heur), "heuristics finalize");
    for (int k = 0; k < MAX_CFG; k++)
      DN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[k]), "engine config");
    cudnnStatus_t st = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                                MAX_CFG, &n_cfg, cfgs);
    for (int k = 0; !st && k < n_cfg && k < MAX_CFG && !p->plan; k++) {
      cudnnBackendDescriptor_t plan;
      if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan)) continue;
      int64_t got = 0, ws = 0;
      cudnnStatus_t e = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &c->dnn);
      if (!e) e = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[k]);
      if (!e) e = cudnnBackendFinalize(plan);
      if (!e) e = cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got,
                                           &ws);
      if (e) {
        last = e;
        cudnnBackendDestroyDescriptor(plan);
        continue;
      }
      p->plan = plan, p->ws_bytes = ws;
    }
    for (int k = 0; k < MAX_CFG; k++) cudnnBackendDestroyDescriptor(cfgs[k]);
    if (st) last = st;
  }
  if (!p->plan) {
    if (last) return dnn_fail(b, last, "no engine configuration finalizes for this layout");
    return qvl_fail(b->err, QVL_ERR_DEVICE, "cuda attention: cuDNN has no engine for this layout");
  }
  return QVL_OK;
}

static void plan_free(sdpa_plan *p) {
  if (p->plan) cudnnBackendDestroyDescriptor(p->plan);
  for (int i = 0; i < p->n_desc; i++) cudnnBackendDestroyDescriptor(p->desc[i]);
  memset(p, 0, sizeof *p);
}

/* The index of the bucket's plan in c->plans (built on first use), or -1 with b->err set. */
static int plan_get(qvl_backend *b, int nb, int s, int heads, int hd, int packed, int dense) {
  cuda_ctx *c = b->ctx;
  for (int i = 0; i < c->n_plans; i++) {
    sdpa_plan *p = &c->plans[i];
    if (p->b == nb && p->s == s && p->heads == heads && p->hd == hd && p->packed == packed && p->dense == dense)
      return i;
  }
  if (c->n_plans == c->cap_plans) {
    int cap = c->cap_plans ? 2 * c->cap_plans : 16;
    sdpa_plan *np = realloc(c->plans, (size_t)cap * sizeof *np);
    if (!np) return qvl_fail(b->err, QVL_ERR_NOMEM, "cuda attention: out of memory"), -1;
    c->plans = np, c->cap_plans = cap;
  }
  sdpa_plan *p = &c->plans[c->n_plans];
  memset(p, 0, sizeof *p);
  p->b = nb, p->s = s, p->heads = heads, p->hd = hd, p->packed = packed, p->dense = dense;
  if (sdpa_build(b, p)) {
    plan_free(p);
    return -1;
  }
  return c->n_plans++;
}

static int next_pow2(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

/* A prepared attention. dev: ragged metadata (lens [nb] int32 padded to 16 bytes, offsets of q/k/v and of o
 * [nb + 1] int64), then the workspace, then contiguous q, k, v when the interleaved layout was refused. */
typedef struct sdpa_att {
  int ragged, dense;   /* plan indices (-1: none) */
  int use_dense;       /* which one runs */
  int decided, packed, heads, head_dim, nb;
  int64_t rows;
  void *dev;
  size_t lens_bytes, ws_off, split_off;
} sdpa_att;

void cuda_sdpa_free(qvl_backend *b, void *att) {
  sdpa_att *a = att;
  if (!a) return;
  b->free(b, a->dev);
  free(a);
}

int cuda_sdpa_prepare(qvl_backend *b, void **att, const int32_t *cu, const int32_t *cu_dev, int n_seq, int heads,
                      int head_dim, int dense_ok) {
  cuda_ctx *c = b->ctx;
  *att = NULL;
  int max_s = 0, dense = dense_ok && n_seq > 1 && cu[1] % 64 == 0 && cu[1] > 0;
  for (int i = 0; i < n_seq; i++) {
    if (cu[i + 1] < cu[i]) return qvl_fail(b->err, QVL_ERR_INVALID_ARG, "cuda attention: cu_seqlens not sorted");
    max_s = cu[i + 1] - cu[i] > max_s ? cu[i + 1] - cu[i] : max_s;
    dense &= cu[i + 1] - cu[i] == cu[1];
  }
  sdpa_att *a = calloc(1, sizeof *a);
  if (!a) return qvl_fail(b->err, QVL_ERR_NOMEM, "cuda attention: out of memory");
  a->ragged = a->dense = -1, a->packed = 1, a->heads = heads, a->head_dim = head_dim, a->rows = n_seq ? cu[n_seq] : 0;
  *att = a;
  if (!max_s) return QVL_OK; /* nothing to attend over: attention is a no-op */
  int s = (max_s + 63) / 64 * 64, small = (int64_t)n_seq * max_s < TUNE_MIN_TOKENS;
  a->nb = next_pow2(n_seq);
  /* equal lengths: the dense plan; small calls take it alone (no timing), larger ones time it against ragged */
  if (dense && (a->dense = plan_get(b, n_seq, cu[1], heads, head_dim, 1, 1)) < 0) qvl_err_clear(b->err);
  if (!(small && a->dense >= 0) && (a->ragged = plan_get(b, a->nb, s, heads, head_dim, 1, 0)) < 0) {
    qvl_err_clear(b->err); /* interleaved q/k/v refused: contiguous copies */
    a->packed = 0, a->dense = -1;
    if ((a->ragged = plan_get(b, a->nb, s, heads, head_dim, 0, 0)) < 0) return b->err->code;
  }
  int64_t ws = a->ragged >= 0 ? c->plans[a->ragged].ws_bytes : 0;
  if (a->dense >= 0 && c->plans[a->dense].ws_bytes > ws) ws = c->plans[a->dense].ws_bytes;
  int64_t HD = (int64_t)heads * head_dim;
  a->lens_bytes = ((size_t)a->nb * 4 + 15) / 16 * 16;
  a->ws_off = (a->lens_bytes + 2 * (size_t)(a->nb + 1) * 8 + 255) / 256 * 256;
  a->split_off = (a->ws_off + (size_t)ws + 255) / 256 * 256;
  size_t bytes = a->split_off + (a->packed ? 0 : (size_t)(3 * a->rows * HD) * 2);
  int rc = b->alloc(b, &a->dev, bytes);
  char *d = a->dev;
  if (!rc) rc = cuda_sdpa_meta((int32_t *)d, (int64_t *)(d + a->lens_bytes), (int64_t *)(d + a->lens_bytes) + a->nb + 1,
                               cu_dev, n_seq, a->nb, a->packed ? 3 * HD : HD, HD, c->stream)
                    ? qvl_fail(b->err, QVL_ERR_DEVICE, "cuda attention: metadata kernel launch failed")
                    : QVL_OK;
  return rc;
}

/* One execution of plan (a descriptor of p) on the prepared buffers. */
static cudnnStatus_t run_plan(qvl_backend *b, const sdpa_att *a, const sdpa_plan *p, cudnnBackendDescriptor_t plan,
                              const void *q, const void *k, const void *v, void *out, float *scale) {
  cuda_ctx *c = b->ctx;
  char *d = a->dev;
  void *ws = p->ws_bytes ? d + a->ws_off : NULL, *lens = d, *oq = d + a->lens_bytes;
  void *oo = d + a->lens_bytes + (size_t)(a->nb + 1) * 8;
  int64_t uids[] = {U_Q, U_K, U_V, U_O, U_SCALE, U_SLQ, U_SLKV, U_RQ, U_RK, U_RV, U_RO};
  void *ptrs[] = {(void *)q, (void *)k, (void *)v, out, scale, lens, lens, oq, oq, oq, oo};
  int n_ptrs = p->dense ? 5 : 11; /* dense: no sequence lengths, no ragged offsets */
  cudnnBackendDescriptor_t vp;
  cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
  if (st) return st;
  st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n_ptrs, ptrs);
  if (!st) st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n_ptrs, uids);
  if (!st) st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
  if (!st) st = cudnnBackendFinalize(vp);
  if (!st) st = cudnnBackendExecute(c->dnn, plan, vp);
  cudnnBackendDestroyDescriptor(vp);
  return st;
}

/* Times p once on the real buffers (after one untimed run) when compare is set (dense against ragged); settles it
 * untimed otherwise and with QVL_SDPA_TUNE=0. */
static int tune(qvl_backend *b, const sdpa_att *a, sdpa_plan *p, const void *q, const void *k, const void *v,
                void *out, float *scale, int compare) {
  cuda_ctx *c = b->ctx;
  const char *log = getenv("QVL_SDPA_LOG"), *off = getenv("QVL_SDPA_TUNE");
  p->tuned = 1;
  if ((off && *off == '0') || !compare) return QVL_OK;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  float ms = 0;
  cudnnStatus_t st = run_plan(b, a, p, p->plan, q, k, v, out, scale);
  cudaEventRecord(e0, c->stream);
  if (!st) st = run_plan(b, a, p, p->plan, q, k, v, out, scale);
  cudaEventRecord(e1, c->stream);
  cudaEventSynchronize(e1);
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  if (log && *log == '1')
    fprintf(stderr, "qvl sdpa: %s b %d s %d h %d d %d: %s %.3f ms\n", p->dense ? "dense" : "ragged", p->b, p->s,
            p->heads, p->hd, st ? "failed" : "ok", ms);
  if (st) return dnn_fail(b, st, "execute");
  p->best_ms = ms;
  return cuda_check(b, cudaGetLastError(), "attention tuning");
}

int cuda_sdpa_run(qvl_backend *b, void *out, const void *qkv, const void *att, float scale) {
  cuda_ctx *c = b->ctx;
  sdpa_att *a = (sdpa_att *)att;
  if (a->ragged < 0 && a->dense < 0) return QVL_OK; /* nothing to attend over */
  int64_t HD = (int64_t)a->heads * a->head_dim;
  const uint16_t *q = qkv, *k = q + HD, *v = q + 2 * HD;
  if (!a->packed) { /* contiguous q, k, v after the metadata */
    uint16_t *sq = (uint16_t *)((char *)a->dev + a->split_off);
    for (int i = 0; i < 3; i++)
      if (cuda_copy_rows(sq + (int64_t)i * a->rows * HD, HD, (const uint16_t *)qkv + i * HD, 3 * HD, a->rows, HD,
                         c->stream))
        return qvl_fail(b->err, QVL_ERR_DEVICE, "cuda attention: q/k/v split failed");
    q = sq, k = sq + a->rows * HD, v = sq + 2 * a->rows * HD;
  }
  enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing(c->stream, &cap);
  if (!a->decided && cap == cudaStreamCaptureStatusNone) { /* first eager run: tune, choose dense or ragged */
    sdpa_plan *r = a->ragged >= 0 ? &c->plans[a->ragged] : NULL, *dn = a->dense >= 0 ? &c->plans[a->dense] : NULL;
    if (r && !r->tuned && tune(b, a, r, q, k, v, out, &scale, dn != NULL)) return b->err->code;
    if (dn && !dn->tuned && tune(b, a, dn, q, k, v, out, &scale, r != NULL)) return b->err->code;
    /* both timed: the faster; otherwise (tuning off, or a plan settled untimed by a smaller call) dense first */
    int timed = dn && r && dn->best_ms > 0 && r->best_ms > 0;
    a->use_dense = dn && (!r || !timed || dn->best_ms <= r->best_ms), a->decided = 1;
  } else if (!a->decided) { /* first run inside a capture: the heuristics' order, dense first */
    a->use_dense = a->dense >= 0;
  }
  const sdpa_plan *p = &c->plans[a->use_dense ? a->dense : a->ragged];
  cudnnStatus_t st = run_plan(b, a, p, p->plan, q, k, v, out, &scale);
  return st ? dnn_fail(b, st, "execute") : QVL_OK;
}

void cuda_sdpa_destroy(cuda_ctx *c) {
  for (int i = 0; i < c->n_plans; i++) plan_free(&c->plans[i]);
  free(c->plans);
}
