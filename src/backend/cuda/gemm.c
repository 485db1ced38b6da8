/* gemm.c - y[m,n] = x[m,k] w[n,k]^T (+ bias) through cuBLASLt, bf16 in/out, f32 accumulation, the bias in
 * the epilogue. Row-major y is column-major y^T = w x^T: A = w (k x n, transposed), B = x (k x m), C = y^T.
 * QVL_EPI_GELU_TANH uses the GELU(_BIAS) epilogue; QVL_EPI_RESIDUAL reads y as C with beta = 1.
 * Plans are cached per (m, n, k, bias, epilogue) with the heuristic's first 8 algorithms; from 1024 rows on, per
 * quarter octave of m instead (1024 .. 1217, 1218 .. 1448, ...): a server's prefill steps and vision passes have
 * a new row count nearly every time, and one plan per count would be tuned again each time. Such a plan serves
 * every m of its bucket: its B and C layouts are set to the call's rows, and where cuBLASLt's check refuses the
 * kept algorithm for them, the heuristic's first for those rows runs instead. For m <= 16 rows (decode steps)
 * gemv.cu's kernel is a candidate too. The first call of a shape with m <= 16 or m >= 1024 rows times each
 * candidate on the real operands (a residual GEMM writes its timing runs to a temporary, not into y) and keeps the
 * fastest; m <= 16 runs thrice each from a cold L2, as a decode step meets its weights; a GEMM of 64 GFLOP or more
 * also times configurations cuBLASLt's heuristic does not offer (other tiles, clusters and options of its kernels,
 * tune_rows). Shapes of 17 .. 1023 rows (prefill chunks of any length) and shapes first seen inside a graph capture
 * keep the heuristic's first, so a shape never runs two algorithms. A server meets a new bucket with requests
 * waiting: linear_record notes the linears of a synthetic pass and linear_tune makes each bucket's choice ahead
 * (qvl_engine_tune, at its start).
 * Plans are found through a hash index. QVL_GEMM_TUNE=0 keeps the heuristic's first everywhere; QVL_GEMM_SEARCH=0
 * times the heuristic's algorithms only, QVL_GEMM_SEARCH=1 searches every shape of 1024 rows or more; QVL_GEMV=0
 * never runs the GEMV kernel, QVL_GEMV=1 runs it wherever it applies, untimed; QVL_GEMM_LOG=1 prints the times. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cuda/cuda_backend.h"
#include "core/rng.h"

enum { TUNE_MIN_ROWS = 1024 };
#define SEARCH_MIN_FLOP 64e9 /* a GEMM from ~0.1 ms on an H100: its search (~2,200 runs) costs ~2 s at 1 ms */

static int lt_fail(qvl_backend *b, cublasStatus_t st, const char *what, int64_t m, int n, int k) {
  return qvl_fail(b->err, QVL_ERR_DEVICE, "cuda linear [%lld x %d] = [%lld x %d] [%d x %d]^T: %s failed (%d)",
                  (long long)m, n, (long long)m, k, n, k, what, (int)st);
}

static int gemm_plan(qvl_backend *b, gemm_entry *g) {
  cuda_ctx *c = b->ctx;
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  cublasLtEpilogue_t ep = g->epi == QVL_EPI_GELU_TANH ? (g->bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU)
                          : (g->bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
  cudaDataType_t bt = CUDA_R_16BF;
  cublasStatus_t st = cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  if (st) return lt_fail(b, st, "cublasLtMatmulDescCreate", g->m, g->n, g->k);
  cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
  cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
  cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep);
  if (g->bias) cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt);
  if ((st = cublasLtMatrixLayoutCreate(&g->la, CUDA_R_16BF, (uint64_t)g->k, (uint64_t)g->n, g->k)) ||
      (st = cublasLtMatrixLayoutCreate(&g->lb, CUDA_R_16BF, (uint64_t)g->k, (uint64_t)g->m, g->k)) ||
      (st = cublasLtMatrixLayoutCreate(&g->lc, CUDA_R_16BF, (uint64_t)g->n, (uint64_t)g->m, g->n)))
    return lt_fail(b, st, "cublasLtMatrixLayoutCreate", g->m, g->n, g->k);
  cublasLtMatmulPreference_t pref;
  cublasLtMatmulPreferenceCreate(&pref);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_bytes,
                                       sizeof c->lt_ws_bytes);
  cublasLtMatmulHeuristicResult_t h[8];
  int found = 0;
  st = cublasLtMatmulAlgoGetHeuristic(c->lt, g->op, g->la, g->lb, g->lc, g->lc, pref, 8, h, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st || !found) return lt_fail(b, st, "no cuBLASLt algorithm:", g->m, g->n, g->k);
  for (int i = 0; i < found; i++) g->cand[i] = h[i].algo;
  g->n_cand = found, g->algo = g->run = h[0].algo;
  const char *tune = getenv("QVL_GEMM_TUNE"), *gemv = getenv("QVL_GEMV");
  g->gemv_ok = g->m <= CUDA_GEMV_MAX_ROWS && g->k % 8 == 0 && !(gemv && *gemv == '0');
  g->gemv = g->gemv_ok && gemv && *gemv == '1';
  const char *search = getenv("QVL_GEMM_SEARCH");
  g->search = g->m >= TUNE_MIN_ROWS && !(search && *search == '0') &&
              (2.0 * (double)g->m * g->n * g->k >= SEARCH_MIN_FLOP || (search && *search == '1'));
  g->tuned = g->gemv || (found + g->gemv_ok == 1 && !g->search) ||
             (g->m > CUDA_GEMV_MAX_ROWS && g->m < TUNE_MIN_ROWS) || (tune && *tune == '0');
  return QVL_OK;
}

/* The cache key of m rows: m itself below TUNE_MIN_ROWS, else -(its quarter octave), 4 * floor(log2(m) * 4) buckets. */
static int64_t row_key(int64_t m) {
  if (m < TUNE_MIN_ROWS) return m;
  int64_t q = 0;
  double v = (double)m;
  while (v >= 2.0) v /= 2.0, q += 4;
  for (double step = 1.189207115002721; v >= step; v /= step) q++; /* 2^(1/4) */
  return -q;
}

static uint32_t key_hash(int64_t key, int n, int k, int bias, int epi) {
  uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ull;
  h ^= ((uint64_t)(uint32_t)n << 32 | (uint32_t)k) * 0xC2B2AE3D27D4EB4Full;
  h ^= (uint64_t)(bias * 4 + epi) * 0x165667B19E3779F9ull;
  return (uint32_t)(h ^ h >> 29);
}

static int same(const gemm_entry *g, int64_t key, int n, int k, int bias, int epi) {
  return g->key == key && g->n == n && g->k == k && g->bias == bias && g->epi == epi;
}

/* Puts entry i into the index (which has a free slot). */
static void index_put(cuda_ctx *c, int i) {
  const gemm_entry *g = &c->gemms[i];
  uint32_t mask = (uint32_t)c->n_gemm_slots - 1, h = key_hash(g->key, g->n, g->k, g->bias, g->epi) & mask;
  while (c->gemm_slots[h]) h = (h + 1) & mask;
  c->gemm_slots[h] = i + 1;
}

static gemm_entry *gemm_find(qvl_backend *b, int64_t m, int n, int k, int bias, int epi) {
  cuda_ctx *c = b->ctx;
  int64_t key = row_key(m);
  if (c->n_gemm_slots) {
    uint32_t mask = (uint32_t)c->n_gemm_slots - 1, h = key_hash(key, n, k, bias, epi) & mask;
    for (; c->gemm_slots[h]; h = (h + 1) & mask)
      if (same(&c->gemms[c->gemm_slots[h] - 1], key, n, k, bias, epi)) return &c->gemms[c->gemm_slots[h] - 1];
  }
  if (c->n_gemms == c->cap_gemms) {
    int cap = c->cap_gemms ? 2 * c->cap_gemms : 64;
    gemm_entry *p = realloc(c->gemms, (size_t)cap * sizeof *p);
    if (!p) return NULL;
    c->gemms = p, c->cap_gemms = cap;
  }
  if (2 * (c->n_gemms + 1) > c->n_gemm_slots) { /* at most half full */
    int n_slots = c->n_gemm_slots ? 2 * c->n_gemm_slots : 256, *slots = calloc((size_t)n_slots, sizeof *slots);
    if (!slots) return NULL;
    free(c->gemm_slots);
    c->gemm_slots = slots, c->n_gemm_slots = n_slots;
    for (int i = 0; i < c->n_gemms; i++) index_put(c, i);
  }
  gemm_entry *g = &c->gemms[c->n_gemms];
  memset(g, 0, sizeof *g);
  g->key = key, g->m = m, g->n = n, g->k = k, g->bias = bias, g->epi = epi;
  if (gemm_plan(b, g)) return NULL;
  index_put(c, c->n_gemms++);
  return g;
}

/* Points a bucket's layouts at m rows and sets g->run: the chosen algorithm where cuBLASLt accepts it for them,
 * else the heuristic's first for them. */
static int set_rows(qvl_backend *b, gemm_entry *g, int64_t m) {
  cuda_ctx *c = b->ctx;
  uint64_t cols = (uint64_t)m;
  cublasStatus_t st;
  if (g->m == m) return QVL_OK;
  if ((st = cublasLtMatrixLayoutSetAttribute(g->lb, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols)) ||
      (st = cublasLtMatrixLayoutSetAttribute(g->lc, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols)))
    return lt_fail(b, st, "cublasLtMatrixLayoutSetAttribute", m, g->n, g->k);
  g->m = m, g->run = g->algo;
  cublasLtMatmulHeuristicResult_t h;
  if (cublasLtMatmulAlgoCheck(c->lt, g->op, g->la, g->lb, g->lc, g->lc, &g->run, &h) == CUBLAS_STATUS_SUCCESS &&
      h.workspaceSize <= c->lt_ws_bytes)
    return QVL_OK;
  cublasLtMatmulPreference_t pref;
  int found = 0;
  cublasLtMatmulPreferenceCreate(&pref);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_bytes,
                                       sizeof c->lt_ws_bytes);
  st = cublasLtMatmulAlgoGetHeuristic(c->lt, g->op, g->la, g->lb, g->lc, g->lc, pref, 1, &h, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st || !found) return lt_fail(b, st, "no cuBLASLt algorithm:", m, g->n, g->k);
  g->run = h.algo;
  return QVL_OK;
}

/* A device temporary for tuning, counted in mem_held while it lives; NULL when there is no room. */
static void *tune_alloc(qvl_backend *b, size_t bytes) {
  void *p = NULL;
  if (cudaMalloc(&p, bytes) != cudaSuccess) return (void)cudaGetLastError(), NULL;
  b->mem_held += (int64_t)bytes;
  if (b->mem_held > b->mem_peak) b->mem_peak = b->mem_held;
  return p;
}

static void tune_free(qvl_backend *b, void *p, size_t bytes) {
  if (!p) return;
  cudaFree(p);
  b->mem_held -= (int64_t)bytes;
}

/* Algorithm a into d (C = y). Nonzero on failure. */
static int lt_run(cuda_ctx *c, const gemm_entry *g, const cublasLtMatmulAlgo_t *a, void *d, void *y, const void *x,
                  const void *w, float beta) {
  const float one = 1.0f;
  return (int)cublasLtMatmul(c->lt, g->op, &one, w, g->la, x, g->lb, &beta, y, g->lc, d, g->lc, a, c->lt_ws,
                             c->lt_ws_bytes, c->stream);
}

/* Candidate i into d: cuBLASLt's algorithm i, or the GEMV kernel for i = n_cand. Nonzero on failure. */
static int run_cand(cuda_ctx *c, const gemm_entry *g, int i, void *d, void *y, const void *x, const void *w,
                    const void *bias, float beta) {
  if (i == g->n_cand)
    return cuda_gemv(d, x, w, bias, beta != 0.0f ? y : NULL, (int)g->m, g->n, g->k, g->epi == QVL_EPI_GELU_TANH,
                     c->stream);
  return lt_run(c, g, &g->cand[i], d, y, x, w, beta);
}

static float elapsed(cudaEvent_t e0, cudaEvent_t e1) {
  float t = 0;
  cudaEventSynchronize(e1);
  cudaEventElapsedTime(&t, e0, e1);
  return t;
}

/* m <= 16: each candidate (the GEMV kernel among them) runs thrice after an L2 flush, averaged. With few rows every
 * run reads all of w, as a decode step does, and reads it from HBM: in a step each weight is met once, so timings on
 * a w left in L2 by the previous run (qkv and o fit) would pick for the wrong regime. Sets g->algo and g->gemv. */
static void tune_decode(qvl_backend *b, gemm_entry *g, void *d, void *y, const void *x, const void *w,
                        const void *bias, float beta, int gemv, cudaEvent_t e0, cudaEvent_t e1) {
  cuda_ctx *c = b->ctx;
  size_t flush_bytes = 0;
  void *flush = NULL;
  int l2 = 0;
  if (cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, c->dev) == cudaSuccess && l2 > 0) {
    flush_bytes = 2 * (size_t)l2 / 16 * 16; /* twice L2: read after it, nothing of w is left there */
    if ((flush = tune_alloc(b, flush_bytes)) && cudaMemsetAsync(flush, 0, flush_bytes, c->stream) != cudaSuccess)
      tune_free(b, flush, flush_bytes), flush = NULL;
  }
  const char *log = getenv("QVL_GEMM_LOG");
  int best = 0, n_all = g->n_cand + (gemv ? 1 : 0);
  float best_ms = -1, gemv_ms = -1;
  for (int i = 0; i < n_all; i++) {
    float sum = 0;
    int st = run_cand(c, g, i, d, y, x, w, bias, beta);
    for (int r = 0; r < 3 && !st; r++) {
      if (flush) cuda_l2_flush(flush, flush_bytes, c->stream);
      cudaEventRecord(e0, c->stream);
      st = run_cand(c, g, i, d, y, x, w, bias, beta);
      cudaEventRecord(e1, c->stream);
      sum += elapsed(e0, e1) / 3.0f;
    }
    if (log && *log == '1')
      fprintf(stderr, "qvl gemm: [%lld x %d x %d] epi %d bias %d: %s %d of %d: %s %.4f ms (%.0f GB/s)\n",
              (long long)g->m, g->n, g->k, g->epi, g->bias, i == g->n_cand ? "gemv" : "algorithm", i, g->n_cand,
              st ? "failed" : "ok", sum, 2.0 * ((double)g->n * g->k + (double)g->m * (g->k + g->n)) / (sum * 1e6));
    if (st) continue;
    if (i == g->n_cand) gemv_ms = sum;
    else if (best_ms < 0 || sum < best_ms) best = i, best_ms = sum;
  }
  tune_free(b, flush, flush_bytes);
  g->algo = g->run = g->cand[best];
  g->gemv = gemv_ms >= 0 && (best_ms < 0 || gemv_ms < best_ms);
}

/* The search's tiles (rows along n): two to four warpgroups of 64 rows by 64 .. 256 columns. */
#define TILE(r, c) CUBLASLT_MATMUL_TILE_##r##x##c,
#define TILE_ROW(r)                                                                                                 \
  TILE(r, 64) TILE(r, 72) TILE(r, 80) TILE(r, 88) TILE(r, 96) TILE(r, 104) TILE(r, 112) TILE(r, 120) TILE(r, 128)   \
  TILE(r, 136) TILE(r, 144) TILE(r, 152) TILE(r, 160) TILE(r, 168) TILE(r, 176) TILE(r, 184) TILE(r, 192)           \
  TILE(r, 200) TILE(r, 208) TILE(r, 216) TILE(r, 224) TILE(r, 232) TILE(r, 240) TILE(r, 248) TILE(r, 256)
static const uint32_t SEARCH_TILES[] = {TILE_ROW(128) TILE_ROW(192) TILE_ROW(256)};
#undef TILE_ROW
#undef TILE
static const uint16_t SEARCH_CLUSTERS[] = {CUBLASLT_CLUSTER_SHAPE_2x1x1, CUBLASLT_CLUSTER_SHAPE_1x2x1};
/* The hot stages (tune_rows): a search's stage 2 times its WIDE_TOP fastest in WIDE_ROUNDS rounds of WIDE_RUNS,
 * stage 3 the HOT_TOP best of those in HOT_ROUNDS rounds of HOT_RUNS; a bucket timing an earlier search's best times
 * REUSE_TOP in REUSE_ROUNDS rounds of REUSE_RUNS. */
enum {
  SEARCH_MAX = 2048,
  WIDE_TOP = 36, WIDE_ROUNDS = 3, WIDE_RUNS = 5,
  HOT_TOP = 12, HOT_ROUNDS = 5, HOT_RUNS = 10,
  REUSE_TOP = 4, REUSE_ROUNDS = 3, REUSE_RUNS = 5,
  MAX_ROUNDS = 5
};
#define WARM_MS 200.0f /* warming the board before timing, unless a tuning ended less than WARM_GAP_S ago */
#define WARM_GAP_S 0.25
_Static_assert(HOT_TOP <= sizeof((struct cuda_found *)0)->a / sizeof(cublasLtMatmulAlgo_t), "found keeps HOT_TOP");
_Static_assert(HOT_TOP <= WIDE_TOP && REUSE_TOP <= WIDE_TOP, "hot_stage's rounds hold WIDE_TOP candidates");
_Static_assert(WIDE_ROUNDS <= MAX_ROUNDS && HOT_ROUNDS <= MAX_ROUNDS && REUSE_ROUNDS <= MAX_ROUNDS, "MAX_ROUNDS");

static int32_t algo_id(const cublasLtMatmulAlgo_t *a) {
  int32_t id = -1;
  size_t sz;
  cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &sz);
  return id;
}

/* Appends to out (n of cap used) the configurations of g's heuristic algorithms the search times: each of their
 * tiles in SEARCH_TILES on a 2x1 and a 1x2 cluster with each custom option, those cuBLASLt's check accepts for g
 * within the workspace. Returns the new count. */
static int search_space(cuda_ctx *c, const gemm_entry *g, cublasLtMatmulAlgo_t *out, int n, int cap) {
  for (int i = 0; i < g->n_cand; i++) {
    int32_t id = algo_id(&g->cand[i]), cmax = 0, seen = 0;
    for (int j = 0; j < i; j++) seen |= algo_id(&g->cand[j]) == id;
    size_t sz = 0;
    if (seen || cublasLtMatmulAlgoCapGetAttribute(&g->cand[i], CUBLASLT_ALGO_CAP_TILE_IDS, NULL, 0, &sz) || !sz)
      continue;
    uint32_t *tiles = malloc(sz);
    if (!tiles || cublasLtMatmulAlgoCapGetAttribute(&g->cand[i], CUBLASLT_ALGO_CAP_TILE_IDS, tiles, sz, &sz)) {
      free(tiles);
      continue;
    }
    cublasLtMatmulAlgoCapGetAttribute(&g->cand[i], CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX, &cmax, sizeof cmax, NULL);
    for (size_t t = 0; t < sz / sizeof *tiles; t++) {
      int wanted = 0;
      for (size_t s = 0; s < sizeof SEARCH_TILES / sizeof *SEARCH_TILES; s++) wanted |= tiles[t] == SEARCH_TILES[s];
      for (size_t cl = 0; wanted && cl < sizeof SEARCH_CLUSTERS / sizeof *SEARCH_CLUSTERS; cl++)
        for (uint32_t opt = 0; opt <= (uint32_t)cmax && n < cap; opt++) {
          cublasLtMatmulAlgo_t a = g->cand[i]; /* the heuristic's configuration, retiled */
          cublasLtMatmulHeuristicResult_t h;
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tiles[t], sizeof tiles[t]);
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &SEARCH_CLUSTERS[cl],
                                               sizeof SEARCH_CLUSTERS[cl]);
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &opt, sizeof opt);
          if (cublasLtMatmulAlgoCheck(c->lt, g->op, g->la, g->lb, g->lc, g->lc, &a, &h) == CUBLAS_STATUS_SUCCESS &&
              h.workspaceSize <= c->lt_ws_bytes)
            out[n++] = a;
        }
    }
    free(tiles);
  }
  return n;
}

/* A candidate: its index, its stage-1 time, its median of rounds in each hot stage that timed it (else 0), and the
 * time of the last stage that timed it, which ranks it. */
typedef struct timed { float ms, hot[2], last; int i; } timed;

static int by_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

static int by_last(const void *a, const void *b) {
  return by_float(&((const timed *)a)->last, &((const timed *)b)->last);
}

/* The search's results for g's (n, k, bias, epilogue): found and filled (count > 0) by an earlier row bucket, found
 * empty for the first, NULL where there is no room to keep them. */
static struct cuda_found *found_get(cuda_ctx *c, const gemm_entry *g) {
  for (int i = 0; i < c->n_found; i++) {
    struct cuda_found *f = &c->found[i];
    if (f->n == g->n && f->k == g->k && f->bias == g->bias && f->epi == g->epi) return f;
  }
  if (c->n_found == c->cap_found) {
    int cap = c->cap_found ? 2 * c->cap_found : 16;
    struct cuda_found *p = realloc(c->found, (size_t)cap * sizeof *p);
    if (!p) return NULL;
    c->found = p, c->cap_found = cap;
  }
  struct cuda_found *f = &c->found[c->n_found++];
  memset(f, 0, sizeof *f);
  f->n = g->n, f->k = g->k, f->bias = g->bias, f->epi = g->epi;
  return f;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* A hot stage: t[0 .. top) (sorted by their last time) timed again in rounds of runs back-to-back runs, each round
 * starting at another candidate (so that none is always timed first, after the coolest gap), each one's median
 * round into hot[h], then t[0 .. top) sorted by it. */
static void hot_stage(cuda_ctx *c, const gemm_entry *g, const cublasLtMatmulAlgo_t *a, timed *t, int top, int h,
                      int rounds, int runs, void *d, void *y, const void *x, const void *w, float beta, cudaEvent_t e0,
                      cudaEvent_t e1) {
  float round_ms[WIDE_TOP][MAX_ROUNDS];
  for (int r = 0; r < rounds; r++)
    for (int j = 0; j < top; j++) {
      int i = (j + r * top / rounds) % top;
      cudaEventRecord(e0, c->stream);
      for (int k = 0; k < runs; k++) lt_run(c, g, &a[t[i].i], d, y, x, w, beta);
      cudaEventRecord(e1, c->stream);
      round_ms[i][r] = elapsed(e0, e1) / (float)runs;
    }
  for (int i = 0; i < top; i++) {
    qsort(round_ms[i], (size_t)rounds, sizeof round_ms[i][0], by_float);
    t[i].hot[h] = t[i].last = round_ms[i][rounds / 2];
  }
  qsort(t, (size_t)top, sizeof *t, by_last);
}

/* m >= 1024: the candidates are the heuristic's 8 and, for a large GEMM (g->search), search_space's configurations
 * (340 on an H100, where the heuristic's best ran 10-25% slower than the best of them at the tower's clocks,
 * session 11), or, where another row bucket of the same (n, k, bias, epilogue) searched already, the HOT_TOP that
 * search ranked best (a server tunes some 24 buckets of each shape: one search each would cost a minute at start).
 * Stage 1 runs each candidate once after an untimed run (its kernel loaded), in order, then once more in reverse
 * order, the mean counting (the faster of the two favoured the first candidates, timed on a cooler board); a GEMM below
 * 64 GFLOP keeps its fastest. A large one runs at the board's power limit in a large pass, where a kernel's speed
 * follows its energy, not its speed on a cool GPU (a 192x192 tile the heuristic offers first ran 25% slower there
 * than the best): it is timed on a GPU at its sustained clocks (WARM_MS of the heuristic's first unless a tuning
 * ended just before), and hot stages (hot_stage) time the fastest again in rounds of back-to-back runs, keeping the
 * one of least median. A search narrows in two: stage 2 takes stage 1's WIDE_TOP fastest (single runs at the power
 * limit scatter by a few percent, as much as the search's best few differ: session 11's ranking of 12 kept the best
 * of an exhaustive run only sometimes), stage 3 the HOT_TOP fastest of stage 2 (~2,200 runs, ~2 s at 1 ms a run);
 * the reuse of one times REUSE_TOP in one stage. Sets g->algo. */
static void tune_rows(qvl_backend *b, gemm_entry *g, void *d, void *y, const void *x, const void *w, float beta,
                      cudaEvent_t e0, cudaEvent_t e1) {
  cuda_ctx *c = b->ctx;
  const char *log = getenv("QVL_GEMM_LOG");
  struct cuda_found *f = g->search ? found_get(c, g) : NULL;
  int cap = g->n_cand + (g->search ? SEARCH_MAX : 0), n = g->n_cand;
  cublasLtMatmulAlgo_t *a = malloc((size_t)cap * sizeof *a);
  timed *ms = malloc((size_t)cap * sizeof *ms);
  if (!a || !ms) { /* keep the heuristic's first */
    free(a), free(ms);
    return;
  }
  memcpy(a, g->cand, (size_t)g->n_cand * sizeof *a);
  int reuse = f && f->count;
  if (reuse) memcpy(a + n, f->a, (size_t)f->count * sizeof *a), n += f->count;
  else if (g->search) n = search_space(c, g, a, n, cap);
  int st = 0;
  if (g->search && now_s() - c->tuned_at > WARM_GAP_S) { /* the board to its sustained clocks: 0.2 s of the first */
    cudaEventRecord(e0, c->stream);
    st = lt_run(c, g, &a[0], d, y, x, w, beta);
    cudaEventRecord(e1, c->stream);
    float t0 = elapsed(e0, e1);
    for (int k = 0, runs = t0 > 0 ? (int)(WARM_MS / t0) : 0; !st && k < runs && k < 2000; k++)
      st = lt_run(c, g, &a[0], d, y, x, w, beta);
  }
  int ok = 0;
  for (int i = 0; i < n; i++) { /* stage 1 forward, each after an untimed run that loads its kernel */
    if (lt_run(c, g, &a[i], d, y, x, w, beta)) continue;
    cudaEventRecord(e0, c->stream);
    st = lt_run(c, g, &a[i], d, y, x, w, beta);
    cudaEventRecord(e1, c->stream);
    float t = elapsed(e0, e1);
    if (!st) ms[ok++] = (timed){t, {0, 0}, 0, i};
  }
  for (int j = ok - 1; j >= 0; j--) { /* and backward: the mean of the two, free of a steady drift of the clocks */
    cudaEventRecord(e0, c->stream);
    lt_run(c, g, &a[ms[j].i], d, y, x, w, beta);
    cudaEventRecord(e1, c->stream);
    ms[j].ms = ms[j].last = 0.5f * (ms[j].ms + elapsed(e0, e1));
  }
  qsort(ms, (size_t)ok, sizeof *ms, by_last);
  int wide = 0, top = 0; /* the candidates the hot stages timed: each stage's count */
  if (ok && reuse)
    hot_stage(c, g, a, ms, top = ok < REUSE_TOP ? ok : REUSE_TOP, 1, REUSE_ROUNDS, REUSE_RUNS, d, y, x, w, beta, e0,
              e1);
  else if (ok && g->search) {
    hot_stage(c, g, a, ms, wide = ok < WIDE_TOP ? ok : WIDE_TOP, 0, WIDE_ROUNDS, WIDE_RUNS, d, y, x, w, beta, e0, e1);
    hot_stage(c, g, a, ms, top = wide < HOT_TOP ? wide : HOT_TOP, 1, HOT_ROUNDS, HOT_RUNS, d, y, x, w, beta, e0, e1);
  }
  if (log && *log == '1' && ok) {
    double flop = 2.0 * (double)g->m * g->n * g->k;
    fprintf(stderr, "qvl gemm: [%lld x %d x %d] epi %d bias %d: %d heuristic + %d %s configurations, %d ran\n",
            (long long)g->m, g->n, g->k, g->epi, g->bias, g->n_cand, n - g->n_cand,
            reuse ? "earlier searched" : "searched", ok);
    for (int i = 0; i < (ok < WIDE_TOP ? ok : WIDE_TOP); i++) {
      const cublasLtMatmulAlgo_t *ai = &a[ms[i].i];
      uint32_t tile = 0, opt = 0;
      uint16_t cl = 0;
      cublasLtMatmulAlgoConfigGetAttribute(ai, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, NULL);
      cublasLtMatmulAlgoConfigGetAttribute(ai, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cl, sizeof cl, NULL);
      cublasLtMatmulAlgoConfigGetAttribute(ai, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &opt, sizeof opt, NULL);
      fprintf(stderr, "qvl gemm:   %s %d (id %d tile %u cluster %u option %u): %.4f ms once (%.0f TFLOP/s)",
              ms[i].i < g->n_cand ? "heuristic" : "searched", ms[i].i, algo_id(ai), tile, (unsigned)cl, opt, ms[i].ms,
              flop / (ms[i].ms * 1e9));
      for (int h = 0; h < 2; h++)
        if (i < (h ? top : wide))
          fprintf(stderr, ", %.4f ms hot %d (%.0f TFLOP/s)", ms[i].hot[h], h + 2, flop / (ms[i].hot[h] * 1e9));
      fprintf(stderr, "%s\n", i == 0 ? " <- kept" : "");
    }
  }
  if (ok) g->algo = g->run = a[ms[0].i];
  if (f && !reuse) /* the search's ranking, for the other row buckets */
    for (int i = 0; i < top; i++) f->a[f->count++] = a[ms[i].i];
  free(a), free(ms);
  c->tuned_at = now_s();
}

/* Times the candidates of a shape first met (m <= 16 or m >= 1024) and keeps the fastest. A residual GEMM's runs go
 * to a temporary D (C = y is only read). Host-synchronising, first call of a shape only. */
static int tune(qvl_backend *b, gemm_entry *g, void *y, const void *x, const void *w, const void *bias, float beta,
                int gemv) {
  size_t bytes = (size_t)g->m * (size_t)g->n * 2;
  void *d = beta != 0.0f ? tune_alloc(b, bytes) : y;
  g->tuned = 1;
  if (!d) return QVL_OK; /* no room to tune: keep the heuristic's choice */
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  if (g->m <= CUDA_GEMV_MAX_ROWS) tune_decode(b, g, d, y, x, w, bias, beta, gemv, e0, e1);
  else tune_rows(b, g, d, y, x, w, beta, e0, e1);
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  if (d != y) tune_free(b, d, bytes);
  return cuda_check(b, cudaGetLastError(), "linear tuning");
}

/* While recording, a linear's shape (n, k, bias, epilogue) is kept with its weights and the most rows it had. */
static void record(cuda_ctx *c, const void *w, const void *bias, int64_t m, int n, int k, int epi) {
  for (int i = 0; i < c->n_rec; i++) {
    struct cuda_rec *r = &c->rec[i];
    if (r->n == n && r->k == k && (r->bias != NULL) == (bias != NULL) && r->epi == epi) {
      r->m = m > r->m ? m : r->m;
      return;
    }
  }
  if (c->n_rec == c->cap_rec) {
    int cap = c->cap_rec ? 2 * c->cap_rec : 16;
    struct cuda_rec *p = realloc(c->rec, (size_t)cap * sizeof *p);
    if (!p) return; /* a shape not recorded is only not tuned ahead */
    c->rec = p, c->cap_rec = cap;
  }
  c->rec[c->n_rec++] = (struct cuda_rec){w, bias, m, n, k, epi};
}

int cuda_linear_record(qvl_backend *b) {
  cuda_ctx *c = b->ctx;
  c->recording = 1, c->n_rec = 0;
  return QVL_OK;
}

/* The first row count past m's cache key (one more below TUNE_MIN_ROWS); keys fall as m grows, 2m is past m's. */
static int64_t next_key(int64_t m) {
  if (m < TUNE_MIN_ROWS) return m + 1;
  int64_t lo = m, hi = m * 2; /* row_key(lo) == row_key(m) != row_key(hi) */
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2;
    *(row_key(mid) == row_key(m) ? &lo : &hi) = mid;
  }
  return hi;
}

enum { SEED_FLOATS = 1 << 20 };

/* bytes of bf16 at p: the seed's values, repeated (doubling copies on the stream). */
static int fill(qvl_backend *b, void *p, size_t bytes, const float *seed) {
  cuda_ctx *c = b->ctx;
  size_t first = bytes / 2 < SEED_FLOATS ? bytes / 2 : SEED_FLOATS;
  int rc = b->upload_f32(b, p, seed, (int64_t)first);
  for (size_t at = first * 2; !rc && at < bytes; at *= 2)
    rc = cuda_check(b, cudaMemcpyAsync((char *)p + at, p, at < bytes - at ? at : bytes - at, cudaMemcpyDeviceToDevice,
                                       c->stream),
                    "tuning operands");
  return rc;
}

/* Every cache key a recorded shape meets between lo and hi rows, scaled to its share of the recorded rows (a shape
 * recorded at a quarter of the largest rows, the merger after a 2x2 merge, is tuned up to hi / 4): the tuned ones,
 * m <= 16 and m >= 1024, each tuned at the first row count of its key, on synthetic operands (random values
 * uploaded once and repeated: timings on zeros would run at the clocks of a GPU that draws less power). */
int cuda_linear_tune(qvl_backend *b, int64_t lo, int64_t hi, int *n_tuned) {
  cuda_ctx *c = b->ctx;
  const char *off = getenv("QVL_GEMM_TUNE");
  c->recording = 0, *n_tuned = 0;
  if (off && *off == '0') return c->n_rec = 0, QVL_OK; /* nothing is timed */
  int64_t most = 1;
  size_t x_bytes = 0, y_bytes = 0;
  for (int i = 0; i < c->n_rec; i++) most = c->rec[i].m > most ? c->rec[i].m : most;
  for (int i = 0; i < c->n_rec; i++) {
    struct cuda_rec *r = &c->rec[i];
    r->m = hi * r->m / most; /* from here on: its highest row count to tune */
    size_t xb = (size_t)r->m * (size_t)r->k * 2, yb = (size_t)r->m * (size_t)r->n * 2;
    x_bytes = xb > x_bytes ? xb : x_bytes, y_bytes = yb > y_bytes ? yb : y_bytes;
  }
  float *seed = malloc(SEED_FLOATS * sizeof *seed);
  void *x = x_bytes ? tune_alloc(b, x_bytes) : NULL, *y = y_bytes ? tune_alloc(b, y_bytes) : NULL;
  int rc = QVL_OK;
  if (seed && x && y) {
    qvl_counter_fill(seed, "gemm tuning operands", 0, SEED_FLOATS, 0.0, 1.0); /* [-1, 1) */
    rc = fill(b, x, x_bytes, seed);
    if (!rc) rc = fill(b, y, y_bytes, seed);
    for (int i = 0; !rc && i < c->n_rec; i++) {
      const struct cuda_rec *r = &c->rec[i];
      for (int64_t m = lo > 0 ? lo : 1; !rc && m <= r->m; m = next_key(m)) {
        if (m > CUDA_GEMV_MAX_ROWS && m < TUNE_MIN_ROWS) m = TUNE_MIN_ROWS; /* not tuned there */
        if (m > r->m) break;
        int fresh = c->n_gemms;
        rc = cuda_linear(b, y, x, r->w, r->bias, m, r->n, r->k, r->epi);
        *n_tuned += c->n_gemms > fresh;
      }
    }
  } /* else no room for the operands: the shapes are tuned when they come */
  free(seed);
  tune_free(b, x, x_bytes), tune_free(b, y, y_bytes);
  c->n_rec = 0;
  return rc;
}

int cuda_linear(qvl_backend *b, void *y, const void *x, const void *w, const void *bias, int64_t m, int n, int k,
                int epi) {
  cuda_ctx *c = b->ctx;
  if (m == 0) return QVL_OK;
  if (c->recording) record(c, w, bias, m, n, k, epi);
  gemm_entry *g = gemm_find(b, m, n, k, bias != NULL, epi);
  cuda_mark_begin(b, 0);
  if (!g) return b->err->code ? b->err->code : qvl_fail(b->err, QVL_ERR_NOMEM, "cuda linear: out of memory");
  if (bias) cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
  const float one = 1.0f, beta = epi == QVL_EPI_RESIDUAL ? 1.0f : 0.0f;
  int gemv = g->gemv_ok && !(((uintptr_t)x | (uintptr_t)w) & 15);
  if (set_rows(b, g, m)) return b->err->code; /* a bucket's layouts to this call's rows */
  if (!g->tuned) {
    enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    cudaStreamIsCapturing(c->stream, &cap);
    if (cap != cudaStreamCaptureStatusNone) g->tuned = 1; /* first seen in a graph: keep what it recorded */
    else if (tune(b, g, y, x, w, bias, beta, gemv)) return b->err->code;
  }
  gemv = gemv && g->gemv;
  cuda_mark_label(b, "linear n %d k %d%s%s%s", n, k, bias ? " bias" : "",
                  epi == QVL_EPI_GELU_TANH ? " gelu" : epi == QVL_EPI_RESIDUAL ? " residual" : "", gemv ? " gemv" : "");
  if (gemv) {
    int rc =
        cuda_gemv(y, x, w, bias, epi == QVL_EPI_RESIDUAL ? y : NULL, (int)m, n, k, epi == QVL_EPI_GELU_TANH, c->stream);
    cuda_mark_end(b);
    return rc ? qvl_fail(b->err, rc, "cuda linear [%lld x %d x %d]: gemv launch failed", (long long)m, n, k) : QVL_OK;
  }
  cublasStatus_t st = cublasLtMatmul(c->lt, g->op, &one, w, g->la, x, g->lb, &beta, y, g->lc, y, g->lc, &g->run,
                                     c->lt_ws, c->lt_ws_bytes, c->stream);
  cuda_mark_end(b);
  return st ? lt_fail(b, st, "cublasLtMatmul", m, n, k) : QVL_OK;
}

void cuda_gemm_destroy(cuda_ctx *c) {
  for (int i = 0; i < c->n_gemms; i++) {
    cublasLtMatmulDescDestroy(c->gemms[i].op);
    cublasLtMatrixLayoutDestroy(c->gemms[i].la);
    cublasLtMatrixLayoutDestroy(c->gemms[i].lb);
    cublasLtMatrixLayoutDestroy(c->gemms[i].lc);
  }
  free(c->gemms), free(c->gemm_slots), free(c->rec), free(c->found);
}
