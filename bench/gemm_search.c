/* gemm_search.c - does a search over cuBLASLt's algorithm configurations beat the heuristic's top 8 (what gemm.c
 * times and picks from) for qvl's GEMM shapes, and by how much? A measurement tool, not part of the engine.
 *
 * Run (built with the CUDA backend only, by `ninja -C build` or `ninja -C build gemm_search`; not a ctest test):
 *   build/gemm_search --quick > gemm_search.jsonl      # the 12 built-in shapes (BUILTIN below)
 *   build/gemm_search 1735 3584 18944 residual --splitk
 *   options: --quick (fewer runs and candidates), --splitk (split-K 2..16 too), --cap N (timed candidates per shape);
 *   shapes: any number of M N K EPI. Time limits per shape: enumeration 8 s (--quick 4), search timing 15 s (8).
 *
 * Each shape is y[M,N] = x[M,K] w[N,K]^T set up exactly as src/backend/cuda/gemm.c does: bf16 A/B/C/D,
 * CUBLAS_COMPUTE_32F with f32 scale, row-major y as column-major y^T = w x^T (A = w transposed, k x n; B = x, k x m;
 * C = D = y^T, n x m), 32 MiB of workspace (cuda_backend.c's lt_ws_bytes). EPI is one of
 *   none           DEFAULT epilogue, beta = 0
 *   bias           BIAS epilogue (bf16 bias), beta = 0
 *   gelu_bias      GELU_BIAS epilogue (cuBLASLt's GELU is the tanh form: QVL_EPI_GELU_TANH with a bias)
 *   residual       DEFAULT epilogue, beta = 1 with C = D = y (QVL_EPI_RESIDUAL without a bias)
 *   bias_residual  BIAS epilogue and beta = 1 with C = D = y (QVL_EPI_RESIDUAL with a bias: gemm_plan picks the
 *                  epilogue from the bias alone, cuda_linear sets beta = 1 from the residual flag)
 * Operands are random bf16 in [-1, 1] (a pinned host pattern copied up), never zeros.
 *
 * heuristic: cublasLtMatmulAlgoGetHeuristic asked for 8 (gemm.c's candidates) and for 64; every answer timed.
 * search: every id of cublasLtMatmulAlgoGetIds(COMPUTE_32F, R_32F, BF16 A/B/C/D) that cublasLtMatmulAlgoInit accepts,
 * whose EPILOGUE_MASK allows EPI and that uses tensor cores (FMA-only ids are skipped, "fma_ids_skipped"); every
 * configuration of its capabilities (tile, stages, cluster shape, CTA swizzle, custom option; split-K 1, with --splitk
 * also 2..16 times each reduction scheme of its mask) that cublasLtMatmulAlgoCheck accepts within the workspace.
 * Searched in three levels, so that a capped budget still lands near the best:
 *   L0  one configuration per (id, tile): its AUTO (else deepest) valid stages, cluster AUTO, no swizzle, custom 0;
 *       an even sample of the (id, tile)s when they are more than half the cap
 *   L1  the other valid stages (and with --splitk the split-K variants) of the fastest (id, tile)s
 *   L2  every cluster shape x swizzle x custom option of the fastest (id, tile, stages)s
 * The heuristic's fastest (id, tile) and (id, tile, stages) go first at L1 and L2, so its neighbourhood is covered
 * whatever the cap. L0 gets half of the cap, L1 half of what is left, L2 the rest: at most --cap (400, --quick 150)
 * configurations are timed per shape, and the timing time limit is split the same way. "capped": true when the cap or
 * a time limit ("enum_cut", "time_cut") left some out, i.e. the search was not exhaustive.
 *
 * timing: every candidate gets one untimed run, then the median of 5 (--quick 3) runs, each between two CUDA events
 * (record, matmul, record, synchronize); one whose first timed run is over 2.5x the shape's best so far stops there.
 * Then the search's 5 best, and the heuristic's first and 3 best (and the best of the other 56), are timed again,
 * median of 20: every *_ms in the JSON is such a confirmation. "gain" = heuristic_best_ms / exhaustive_best_ms,
 * "gain_vs_first" = heuristic_first_ms / exhaustive_best_ms.
 * check: "agree_rel" = max |y_search - y_heuristic| / max |y_heuristic| over three 1 Mi-element slices of y (start,
 * middle, end), the two best run once each on the same inputs: ~1e-2 is bf16 rounding, more means the winner
 * computes something else.
 *
 * Cluster shapes: CUDA 13's cublasLt.h has no capability listing them (no CUBLASLT_ALGO_CAP_CLUSTER_SHAPE_IDS), so L2
 * tries AUTO and the 1..8-block shapes of CLUSTERS and keeps what cublasLtMatmulAlgoCheck accepts; an algorithm that
 * ignores the attribute shows up as near-duplicate times. CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID is left at 0.
 *
 * Output: one JSON line per shape on stdout; progress, the heuristic's 8 and the search's top 10 on stderr. A cfg is
 * "id/tile/stages/cluster/swizzle/custom" (enum values of cublasLt.h), with "/sk<n>r<scheme>" for split-K.
 * "same_as_heuristic": the search's best is the heuristic's best configuration; "heuristic_best_searched": the
 * search timed that configuration itself (false: the heuristic's kernel lies outside what the search can reach).
 * "l0".."l2": timed per level; "checks": cublasLtMatmulAlgoCheck calls; "run_failures": checked but refused to run.
 */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
  WS_BYTES = 32 << 20,      /* cuda_backend.c's lt_ws_bytes */
  MAX_IDS = 1024,           /* room for cublasLtMatmulAlgoGetIds */
  MAX_REPS = 20,            /* the confirmation's median of 20 */
  CUSTOM_LIMIT = 31,        /* custom options tried per configuration: 0 .. min(CAP_CUSTOM_OPTION_MAX, this) */
  PATTERN = (1 << 22) + 17, /* random bf16 values every operand is tiled from */
  SLICE = 1 << 20,          /* elements of y per slice in the agreement check */
};

typedef struct {
  long long m;
  int n, k;
  const char *epi;
} shape;

/* Qwen2.5-VL vision at 64 images (M = 65536): qkv, proj (+ residual), gate|up, down (3420 padded to 3456) (+ residual);
 * Qwen3-VL vision at 64 images of 512x512: qkv, proj, fc1 (GELU tanh), fc2; the 7B language model's prefill at
 * 1735 rows: qkv, o (+ residual), gate|up, down (+ residual). */
static const shape BUILTIN[] = {
    {65536, 3840, 1280, "bias"},          {65536, 1280, 1280, "bias_residual"}, {65536, 6912, 1280, "bias"},
    {65536, 1280, 3456, "bias_residual"}, {65536, 3456, 1152, "bias"},          {65536, 1152, 1152, "bias_residual"},
    {65536, 4352, 1152, "gelu_bias"},     {65536, 1152, 4352, "bias_residual"}, {1735, 4608, 3584, "bias"},
    {1735, 3584, 3584, "residual"},       {1735, 37888, 3584, "none"},          {1735, 3584, 18944, "residual"},
};

static const struct {
  const char *name;
  cublasLtEpilogue_t ep;
  float beta;
} EPIS[] = {
    {"none", CUBLASLT_EPILOGUE_DEFAULT, 0.0f},        {"bias", CUBLASLT_EPILOGUE_BIAS, 0.0f},
    {"gelu_bias", CUBLASLT_EPILOGUE_GELU_BIAS, 0.0f}, {"residual", CUBLASLT_EPILOGUE_DEFAULT, 1.0f},
    {"bias_residual", CUBLASLT_EPILOGUE_BIAS, 1.0f},
};

/* Tried at L2: Hopper's portable cluster sizes (at most 8 blocks). */
static const uint16_t CLUSTERS[] = {
    CUBLASLT_CLUSTER_SHAPE_AUTO,  CUBLASLT_CLUSTER_SHAPE_1x1x1, CUBLASLT_CLUSTER_SHAPE_2x1x1,
    CUBLASLT_CLUSTER_SHAPE_1x2x1, CUBLASLT_CLUSTER_SHAPE_2x2x1, CUBLASLT_CLUSTER_SHAPE_4x1x1,
    CUBLASLT_CLUSTER_SHAPE_1x4x1, CUBLASLT_CLUSTER_SHAPE_4x2x1, CUBLASLT_CLUSTER_SHAPE_2x4x1,
};
static const int32_t SPLITS[] = {2, 3, 4, 6, 8, 16}; /* --splitk */

typedef struct {
  int quick, splitk, cap, reps; /* --quick, --splitk, --cap N; screening runs per candidate */
  double enum_limit_s;          /* seconds for enumerating one shape's (id, tile, stages): 8, --quick 4 */
  double time_limit_s;          /* seconds for timing one shape's search candidates: 15, --quick 8 */
  cublasLtHandle_t lt;
  cudaStream_t s;
  cudaEvent_t e0, e1;
  void *ws;          /* WS_BYTES of cuBLASLt workspace */
  uint16_t *pattern; /* PATTERN pinned random bf16 */
  char err[256];     /* the last CUDA / cuBLASLt error */
  /* per shape */
  float best;                         /* fastest screening median so far, for the early stop */
  int timed, run_fail, checks, fatal; /* searched configurations, refused runs, AlgoCheck calls, context lost */
  int time_cut;                       /* time_limit_s struck */
  double deadline;                    /* now_s() at which the current search level stops timing */
} bench;

typedef struct {
  long long m;
  int n, k;
  const char *epi;
  cublasLtEpilogue_t ep;
  float beta;
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, lc; /* w^T (k x n), x (k x m), y^T (n x m) */
  void *x, *w, *bias, *y;            /* device: [m,k], [n,k], [n] (NULL without BIAS), [m,n] */
} problem;

typedef struct {
  cublasLtMatmulAlgo_t algo;
  int id, heur, seed, level; /* heur: rank in the heuristic's answer, -1 for the search; level: L0..L2 */
  uint32_t tile, stages, swizzle, custom, red;
  uint16_t cluster, inner;
  int32_t splitk;
  size_t ws;
  float waves;
  float ms, conf; /* screening and confirmation medians; -1: not timed or refused */
} cand;

typedef struct {
  cand *v;
  int n, cap;
} cand_list;

typedef struct {
  int id;
  cublasLtMatmulAlgo_t init; /* cublasLtMatmulAlgoInit's algorithm, nothing configured */
  uint32_t *tiles, *stages;  /* CAP_TILE_IDS, CAP_STAGES_IDS; { 0 } (undefined) when the list is empty */
  int n_tiles, n_stages;
  int32_t splitk, custom_max; /* CAP_SPLITK_SUPPORT, CAP_CUSTOM_OPTION_MAX */
  uint32_t swizzle, red_mask; /* CAP_CTA_SWIZZLING_SUPPORT, CAP_REDUCTION_SCHEME_MASK */
} algo_caps;

typedef struct {
  const algo_caps *caps;
  uint32_t tile;
  uint32_t *stages; /* the stages ids the check accepts with cluster AUTO, no swizzle, custom 0, split-K 1 */
  int n_stages, rep, seed;
  float ms; /* the representative's screening median, -1 untimed */
} group;

/* ---- errors, time, data ------------------------------------------------------------------------------------------ */

static int cu(bench *B, cudaError_t e, const char *what) {
  if (e == cudaSuccess) return 0;
  snprintf(B->err, sizeof B->err, "%s: %s", what, cudaGetErrorString(e));
  fprintf(stderr, "gemm_search: %s\n", B->err);
  return -1;
}

static int ltc(bench *B, cublasStatus_t st, const char *what) {
  if (st == CUBLAS_STATUS_SUCCESS) return 0;
  snprintf(B->err, sizeof B->err, "%s: cuBLAS status %d", what, (int)st);
  fprintf(stderr, "gemm_search: %s\n", B->err);
  return -1;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint16_t f2bf(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); /* round to nearest even */
}

static float bf2f(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* elems bf16 at dst, tiled from the pattern starting at element `from` (operands start at different places, so x and
 * w do not share rows). */
static int fill(bench *B, void *dst, size_t elems, size_t from) {
  for (size_t off = 0; off < elems;) {
    size_t src = (off + from) % PATTERN, n = PATTERN - src;
    if (n > elems - off) n = elems - off;
    if (cu(B, cudaMemcpyAsync((uint16_t *)dst + off, B->pattern + src, n * 2, cudaMemcpyHostToDevice, B->s), "fill"))
      return -1;
    off += n;
  }
  return cu(B, cudaStreamSynchronize(B->s), "fill");
}

/* ---- the problem: gemm.c's descriptors and layouts --------------------------------------------------------------- */

static void problem_close(problem *p) {
  if (p->op) cublasLtMatmulDescDestroy(p->op);
  if (p->la) cublasLtMatrixLayoutDestroy(p->la);
  if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
  if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
  cudaFree(p->x), cudaFree(p->w), cudaFree(p->bias), cudaFree(p->y);
  memset(p, 0, sizeof *p);
}

static int problem_desc(bench *B, problem *p) {
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  cudaDataType_t bt = CUDA_R_16BF;
  if (ltc(B, cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate") ||
      ltc(B, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "TRANSA") ||
      ltc(B, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "TRANSB") ||
      ltc(B, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &p->ep, sizeof p->ep), "EPILOGUE"))
    return -1;
  if (p->bias &&
      (ltc(B, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt),
           "BIAS type") ||
       ltc(B, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p->bias, sizeof p->bias),
           "BIAS_POINTER")))
    return -1;
  if (ltc(B, cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, (uint64_t)p->k, (uint64_t)p->n, p->k), "layout A") ||
      ltc(B, cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, (uint64_t)p->k, (uint64_t)p->m, p->k), "layout B") ||
      ltc(B, cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_16BF, (uint64_t)p->n, (uint64_t)p->m, p->n), "layout C"))
    return -1;
  return 0;
}

static int problem_open(bench *B, problem *p, const shape *sh) {
  memset(p, 0, sizeof *p);
  p->m = sh->m, p->n = sh->n, p->k = sh->k, p->epi = sh->epi;
  int e = 0, n_epis = (int)(sizeof EPIS / sizeof EPIS[0]);
  while (e < n_epis && strcmp(EPIS[e].name, sh->epi)) e++;
  if (e == n_epis || sh->m <= 0 || sh->n <= 0 || sh->k <= 0) {
    snprintf(B->err, sizeof B->err, "bad shape or epilogue (none, bias, gelu_bias, residual, bias_residual)");
    return -1;
  }
  p->ep = EPIS[e].ep, p->beta = EPIS[e].beta;
  size_t m = (size_t)p->m, n = (size_t)p->n, k = (size_t)p->k;
  if (cu(B, cudaMalloc(&p->x, m * k * 2), "cudaMalloc x") || cu(B, cudaMalloc(&p->w, n * k * 2), "cudaMalloc w") ||
      cu(B, cudaMalloc(&p->y, m * n * 2), "cudaMalloc y") ||
      ((p->ep & CUBLASLT_EPILOGUE_BIAS) && cu(B, cudaMalloc(&p->bias, n * 2), "cudaMalloc bias")))
    return -1;
  if (fill(B, p->x, m * k, 0) || fill(B, p->w, n * k, 1234567) || fill(B, p->y, m * n, 3333333) ||
      (p->bias && fill(B, p->bias, n, 777)))
    return -1;
  return problem_desc(B, p);
}

/* ---- running and timing ------------------------------------------------------------------------------------------ */

static cublasStatus_t matmul(bench *B, const problem *p, const cublasLtMatmulAlgo_t *a) {
  const float one = 1.0f;
  return cublasLtMatmul(B->lt, p->op, &one, p->w, p->la, p->x, p->lb, &p->beta, p->y, p->lc, p->y, p->lc, a, B->ws,
                        WS_BYTES, B->s);
}

/* One run of a; with `timed`, its device time between two events. Returns ms (0 untimed), -1 where cuBLASLt refuses
 * the configuration (skipped; the error is cleared), -2 on a CUDA error (B->fatal: the context may be gone). */
static float run(bench *B, const problem *p, const cublasLtMatmulAlgo_t *a, int timed) {
  float ms = 0;
  if (timed && cu(B, cudaEventRecord(B->e0, B->s), "cudaEventRecord")) return B->fatal = 1, -2.0f;
  cublasStatus_t st = matmul(B, p, a);
  if (st != CUBLAS_STATUS_SUCCESS) {
    (void)cudaGetLastError();
    if (cu(B, cudaStreamSynchronize(B->s), "after a refused cublasLtMatmul")) return B->fatal = 1, -2.0f;
    B->run_fail++;
    return -1.0f;
  }
  if (!timed) return cu(B, cudaStreamSynchronize(B->s), "cublasLtMatmul") ? (B->fatal = 1, -2.0f) : 0.0f;
  if (cu(B, cudaEventRecord(B->e1, B->s), "cudaEventRecord") || cu(B, cudaEventSynchronize(B->e1), "cublasLtMatmul") ||
      cu(B, cudaEventElapsedTime(&ms, B->e0, B->e1), "cudaEventElapsedTime"))
    return B->fatal = 1, -2.0f;
  return ms;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* Median of `reps` timed runs after one untimed one (it loads the kernel); with early_stop, a first timed run over
 * 2.5x the best so far is the answer. -1 where refused. */
static float time_algo(bench *B, const problem *p, const cublasLtMatmulAlgo_t *a, int reps, int early_stop) {
  float t[MAX_REPS];
  int n = 0;
  if (run(B, p, a, 0) < 0) return -1.0f;
  while (n < reps) {
    float ms = run(B, p, a, 1);
    if (ms < 0) return -1.0f;
    t[n++] = ms;
    if (n == 1 && early_stop && B->best > 0 && ms > 2.5f * B->best) break;
  }
  qsort(t, (size_t)n, sizeof t[0], cmp_float);
  return n % 2 ? t[n / 2] : 0.5f * (t[n / 2 - 1] + t[n / 2]);
}

static int screen(bench *B, const problem *p, cand *c) {
  c->ms = time_algo(B, p, &c->algo, B->reps, 1);
  if (c->ms > 0 && (B->best < 0 || c->ms < B->best)) B->best = c->ms;
  return B->fatal ? -1 : 0;
}

static int confirm(bench *B, const problem *p, cand *c) {
  if (c->ms < 0 || c->conf >= 0) return 0;
  c->conf = time_algo(B, p, &c->algo, MAX_REPS, 0);
  return B->fatal ? -1 : 0;
}

/* Brings the clocks up before anything is timed: ~100 ms of the heuristic's first. */
static int warm_up(bench *B, const problem *p, const cublasLtMatmulAlgo_t *a) {
  float ms = time_algo(B, p, a, 1, 0);
  if (ms <= 0) return B->fatal ? -1 : 0;
  for (int i = 0, n = ms > 20.0f ? 5 : (int)(100.0f / ms); i < n && n < 100000; i++)
    if (matmul(B, p, a) != CUBLAS_STATUS_SUCCESS) break;
  return cu(B, cudaStreamSynchronize(B->s), "warm-up") ? (B->fatal = 1, -1) : 0;
}

/* ---- configurations ---------------------------------------------------------------------------------------------- */

static int push(cand_list *l, const cand *c) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 256;
    cand *v = realloc(l->v, (size_t)cap * sizeof *v);
    if (!v) return -1;
    l->v = v, l->cap = cap;
  }
  l->v[l->n++] = *c;
  return 0;
}

static void cfg_str(const cand *c, char *s, size_t n) {
  int w = snprintf(s, n, "%d/%u/%u/%u/%u/%u", c->id, c->tile, c->stages, (unsigned)c->cluster, c->swizzle, c->custom);
  if (c->splitk > 1 && w > 0 && (size_t)w < n) snprintf(s + w, n - (size_t)w, "/sk%dr%u", (int)c->splitk, c->red);
}

static int same_cfg(const cand *a, const cand *b) {
  return a->id == b->id && a->tile == b->tile && a->stages == b->stages && a->cluster == b->cluster &&
         a->swizzle == b->swizzle && a->custom == b->custom && a->splitk == b->splitk;
}

/* The configuration a heuristic answer carries. Nonzero when an attribute cannot be read (it stays 0). */
static int cfg_read(cand *c) {
  const cublasLtMatmulAlgo_t *a = &c->algo;
  size_t w;
  int bad = 0;
  bad |= cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, &c->id, sizeof c->id, &w) != 0;
  bad |= cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, &c->tile, sizeof c->tile, &w) != 0;
  bad |= cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &c->stages, sizeof c->stages, &w) != 0;
  bad |= cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &c->cluster, sizeof c->cluster,
                                              &w) != 0;
  bad |= cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &c->swizzle, sizeof c->swizzle,
                                              &w) != 0;
  bad |= cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &c->custom, sizeof c->custom,
                                              &w) != 0;
  bad |=
      cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &c->splitk, sizeof c->splitk, &w) != 0;
  bad |=
      cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &c->red, sizeof c->red, &w) != 0;
  if (cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, &c->inner, sizeof c->inner, &w))
    c->inner = 0; /* informational only */
  return bad;
}

/* Writes c's fields into c->algo (a copy of cublasLtMatmulAlgoInit's). Cluster and reduction scheme only when set:
 * their defaults (AUTO, NONE) are what Init leaves. */
static cublasStatus_t cfg_write(cand *c) {
  cublasLtMatmulAlgo_t *a = &c->algo;
  cublasStatus_t st;
  if ((st = cublasLtMatmulAlgoConfigSetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, &c->tile, sizeof c->tile)) ||
      (st = cublasLtMatmulAlgoConfigSetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &c->stages, sizeof c->stages)) ||
      (st = cublasLtMatmulAlgoConfigSetAttribute(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &c->swizzle,
                                                 sizeof c->swizzle)) ||
      (st =
           cublasLtMatmulAlgoConfigSetAttribute(a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &c->custom, sizeof c->custom)) ||
      (st = cublasLtMatmulAlgoConfigSetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &c->splitk, sizeof c->splitk)))
    return st;
  if (c->cluster && (st = cublasLtMatmulAlgoConfigSetAttribute(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &c->cluster,
                                                               sizeof c->cluster)))
    return st;
  if (c->red &&
      (st = cublasLtMatmulAlgoConfigSetAttribute(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &c->red, sizeof c->red)))
    return st;
  return CUBLAS_STATUS_SUCCESS;
}

static cand cand_of(const algo_caps *a, uint32_t tile, uint32_t stages) {
  cand c;
  memset(&c, 0, sizeof c);
  c.algo = a->init, c.id = a->id, c.tile = tile, c.stages = stages, c.splitk = 1;
  c.heur = -1, c.ms = c.conf = -1.0f;
  return c;
}

/* Configures c->algo from its fields and asks cublasLtMatmulAlgoCheck: 1 when it runs within the workspace. */
static int valid(bench *B, const problem *p, cand *c) {
  cublasLtMatmulHeuristicResult_t h;
  memset(&h, 0, sizeof h);
  B->checks++;
  if (cfg_write(c) != CUBLAS_STATUS_SUCCESS ||
      cublasLtMatmulAlgoCheck(B->lt, p->op, p->la, p->lb, p->lc, p->lc, &c->algo, &h) != CUBLAS_STATUS_SUCCESS ||
      h.workspaceSize > WS_BYTES)
    return 0;
  c->ws = h.workspaceSize, c->waves = h.wavesCount;
  return 1;
}

/* ---- the heuristic ----------------------------------------------------------------------------------------------- */

static int heuristic(bench *B, const problem *p, int want, cand_list *out) {
  cublasLtMatmulHeuristicResult_t h[64];
  cublasLtMatmulPreference_t pref;
  size_t ws = WS_BYTES;
  int found = 0;
  if (ltc(B, cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate")) return -1;
  cublasStatus_t st =
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(B->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, want, h, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (ltc(B, st, "cublasLtMatmulAlgoGetHeuristic")) return -1;
  for (int i = 0; i < found; i++) {
    cand c;
    memset(&c, 0, sizeof c);
    c.algo = h[i].algo, c.heur = i, c.ws = h[i].workspaceSize, c.waves = h[i].wavesCount;
    c.ms = c.conf = -1.0f;
    if (cfg_read(&c)) fprintf(stderr, "gemm_search: heuristic answer %d: a configuration attribute is unreadable\n", i);
    if (push(out, &c)) return -1;
  }
  return found;
}

/* ---- the search -------------------------------------------------------------------------------------------------- */

static int cap_get(const cublasLtMatmulAlgo_t *a, cublasLtMatmulAlgoCapAttributes_t attr, void *v, size_t size) {
  size_t w = 0;
  return cublasLtMatmulAlgoCapGetAttribute(a, attr, v, size, &w) != CUBLAS_STATUS_SUCCESS;
}

/* A uint32_t list capability (TILE_IDS, STAGES_IDS) into *out; an empty one is { 0 }, the UNDEFINED id. */
static int cap_list(const cublasLtMatmulAlgo_t *a, cublasLtMatmulAlgoCapAttributes_t attr, uint32_t **out) {
  size_t bytes = 0, w = 0;
  if (cublasLtMatmulAlgoCapGetAttribute(a, attr, NULL, 0, &bytes) != CUBLAS_STATUS_SUCCESS) return -1;
  int n = (int)(bytes / sizeof(uint32_t));
  if (!(*out = calloc(n ? (size_t)n : 1, sizeof(uint32_t)))) return -1;
  if (n && cublasLtMatmulAlgoCapGetAttribute(a, attr, *out, (size_t)n * sizeof(uint32_t), &w) != CUBLAS_STATUS_SUCCESS)
    return -1;
  return n ? n : 1;
}

/* 1: id is usable for p (Init accepts it, its epilogue mask has p's epilogue); 0: skipped; 2: skipped, no tensor
 * cores (an FMA kernel runs bf16 at a fraction of the tensor-core rate and would only burn the time budget). */
static int caps_read(bench *B, const problem *p, int id, algo_caps *c) {
  uint32_t epi = 0;
  uint64_t impl = 0;
  memset(c, 0, sizeof *c);
  c->id = id;
  if (cublasLtMatmulAlgoInit(B->lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF,
                             id, &c->init) != CUBLAS_STATUS_SUCCESS)
    return 0;
  if (!cap_get(&c->init, CUBLASLT_ALGO_CAP_NUMERICAL_IMPL_FLAGS, &impl, sizeof impl) &&
      !(impl & CUBLASLT_NUMERICAL_IMPL_FLAGS_TENSOR_OP_MASK))
    return 2;
  if (cap_get(&c->init, CUBLASLT_ALGO_CAP_EPILOGUE_MASK, &epi, sizeof epi))
    fprintf(stderr, "gemm_search: algorithm %d: epilogue mask unreadable, left to cublasLtMatmulAlgoCheck\n", id);
  else if ((epi & (uint32_t)p->ep) != (uint32_t)p->ep)
    return 0;
  if (cap_get(&c->init, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &c->splitk, sizeof c->splitk) ||
      cap_get(&c->init, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX, &c->custom_max, sizeof c->custom_max) ||
      cap_get(&c->init, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT, &c->swizzle, sizeof c->swizzle) ||
      cap_get(&c->init, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &c->red_mask, sizeof c->red_mask)) {
    fprintf(stderr, "gemm_search: algorithm %d: a capability is unreadable, skipped\n", id);
    return 0;
  }
  if ((c->n_tiles = cap_list(&c->init, CUBLASLT_ALGO_CAP_TILE_IDS, &c->tiles)) < 0 ||
      (c->n_stages = cap_list(&c->init, CUBLASLT_ALGO_CAP_STAGES_IDS, &c->stages)) < 0) {
    fprintf(stderr, "gemm_search: algorithm %d: tile or stages list unreadable, skipped\n", id);
    free(c->tiles), free(c->stages);
    return 0;
  }
  if (c->custom_max > CUSTOM_LIMIT)
    fprintf(stderr, "gemm_search: algorithm %d: custom options 0..%d, only 0..%d tried\n", id, (int)c->custom_max,
            CUSTOM_LIMIT);
  return 1;
}

/* How much a stages id buffers, for L0's representative: AUTO depth first, else the deepest (size x count). */
static int stage_rank(uint32_t s) {
  if (s >= CUBLASLT_MATMUL_STAGES_8xAUTO && s <= CUBLASLT_MATMUL_STAGES_768xAUTO) return 1 << 20;
  if (s >= CUBLASLT_MATMUL_STAGES_16x1 && s <= CUBLASLT_MATMUL_STAGES_128x6)
    return (16 << ((s - 1) / 6)) * (int)((s - 1) % 6 + 1);
  switch (s) {
    case CUBLASLT_MATMUL_STAGES_32x10:
      return 320;
    case CUBLASLT_MATMUL_STAGES_16x10:
      return 160;
    case CUBLASLT_MATMUL_STAGES_8x5:
      return 40;
    case CUBLASLT_MATMUL_STAGES_8x4:
      return 32;
    case CUBLASLT_MATMUL_STAGES_8x3:
      return 24;
    default:
      return 0;
  }
}

/* Every (id, tile) with the stages the check accepts (cluster AUTO, no swizzle, custom 0, split-K 1), until the
 * enumeration's time limit (*cut = 1 when it struck). */
static int groups_build(bench *B, const problem *p, const algo_caps *caps, int n_caps, group **out, int *cut) {
  int n = 0, cap = 0;
  double t0 = now_s();
  *out = NULL, *cut = 0;
  for (int a = 0; a < n_caps; a++)
    for (int t = 0; t < caps[a].n_tiles; t++) {
      if (now_s() - t0 > B->enum_limit_s) return *cut = 1, n;
      group g;
      memset(&g, 0, sizeof g);
      g.caps = &caps[a], g.tile = caps[a].tiles[t], g.ms = -1.0f;
      if (!(g.stages = malloc((size_t)caps[a].n_stages * sizeof *g.stages))) return -1;
      for (int s = 0; s < caps[a].n_stages; s++) {
        cand c = cand_of(&caps[a], g.tile, caps[a].stages[s]);
        if (!valid(B, p, &c)) continue;
        if (!g.n_stages || stage_rank(c.stages) > stage_rank(g.stages[g.rep])) g.rep = g.n_stages;
        g.stages[g.n_stages++] = c.stages;
      }
      if (!g.n_stages) {
        free(g.stages);
        continue;
      }
      if (n == cap) {
        group *v = realloc(*out, (size_t)(cap = cap ? 2 * cap : 256) * sizeof *v);
        if (!v) return free(g.stages), -1;
        *out = v;
      }
      (*out)[n++] = g;
    }
  return n;
}

/* Screens c (already checked) as a search candidate: 1 when the budget is spent (c not run), -1 on a fatal error. */
static int try_cand(bench *B, const problem *p, cand_list *S, cand *c, int level) {
  if (B->timed >= B->cap) return 1;
  if (now_s() > B->deadline) return B->time_cut = 1;
  B->timed++;
  c->level = level;
  if (screen(B, p, c) || push(S, c)) return -1;
  return 0;
}

static int by_group(const void *a, const void *b) { /* seeded first, then fastest representative, untimed last */
  const group *x = a, *y = b;
  if (x->seed != y->seed) return y->seed - x->seed;
  if (x->ms < 0 || y->ms < 0) return (x->ms < 0) - (y->ms < 0);
  return (x->ms > y->ms) - (x->ms < y->ms);
}

static int by_seed_ms(const void *a, const void *b) { /* seeded first, then screening median, refused last */
  const cand *x = a, *y = b;
  if (x->seed != y->seed) return y->seed - x->seed;
  if (x->ms < 0 || y->ms < 0) return (x->ms < 0) - (y->ms < 0);
  return (x->ms > y->ms) - (x->ms < y->ms);
}

/* L0: each group's representative; an even sample of the groups when they are more than half the cap. Visited in a
 * scattered order (a stride coprime to their count), so that a time cut still leaves a spread over ids and tiles. */
static int level0(bench *B, const problem *p, group *g, int n_g, cand_list *S, int *capped) {
  int take = n_g < B->cap / 2 ? n_g : B->cap / 2, stride = 7919; /* a prime */
  if (take < n_g) *capped = 1;
  if (take % stride == 0) stride = 1;
  for (int i = 0; i < take; i++) {
    group *x = &g[(long long)((long long)i * stride % take) * n_g / take];
    cand c = cand_of(x->caps, x->tile, x->stages[x->rep]);
    if (!valid(B, p, &c)) continue; /* it was valid when enumerated; cannot happen */
    int rc = try_cand(B, p, S, &c, 0);
    if (rc) return rc < 0 ? -1 : (*capped = 1, 0);
    x->ms = c.ms;
  }
  return 0;
}

/* L1 for one group: its other stages (all of them when its representative was not run), and with --splitk every
 * stages x split-K x reduction scheme. 1 when the budget ran out. */
static int level1_group(bench *B, const problem *p, const group *x, cand_list *S) {
  const algo_caps *a = x->caps;
  for (int s = 0; s < x->n_stages; s++) {
    cand c = cand_of(a, x->tile, x->stages[s]);
    int rc;
    if ((s != x->rep || x->ms < 0) && valid(B, p, &c) && (rc = try_cand(B, p, S, &c, 1))) return rc;
    for (int k = 0; B->splitk && a->splitk && k < (int)(sizeof SPLITS / sizeof SPLITS[0]); k++)
      for (uint32_t r = 1; r <= CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE; r <<= 1) {
        if (!(a->red_mask & r)) continue;
        c = cand_of(a, x->tile, x->stages[s]);
        c.splitk = SPLITS[k], c.red = r;
        if (valid(B, p, &c) && (rc = try_cand(B, p, S, &c, 1))) return rc;
      }
  }
  return 0;
}

static int level1(bench *B, const problem *p, group *g, int n_g, const cand *seed, cand_list *S, int *capped) {
  for (int i = 0; i < n_g; i++) g[i].seed = seed && seed->id == g[i].caps->id && seed->tile == g[i].tile;
  if (n_g) qsort(g, (size_t)n_g, sizeof *g, by_group);
  int stop = B->timed + (B->cap - B->timed) / 2, cap = B->cap;
  B->cap = stop; /* L1's share; L2 gets the rest */
  for (int i = 0; i < n_g; i++) {
    int rc = level1_group(B, p, &g[i], S);
    if (rc < 0) return B->cap = cap, -1;
    if (rc > 0) {
      *capped = 1;
      break;
    }
  }
  B->cap = cap;
  return 0;
}

/* L2 for one (id, tile, stages[, split-K]) base: every cluster x swizzle x custom but the base's own. */
static int level2_base(bench *B, const problem *p, const cand *base, const algo_caps *a, cand_list *S) {
  int n_cl = (int)(sizeof CLUSTERS / sizeof CLUSTERS[0]),
      n_cu = a->custom_max < CUSTOM_LIMIT ? a->custom_max : CUSTOM_LIMIT;
  for (int cl = 0; cl < n_cl; cl++)
    for (uint32_t sw = 0; sw <= (a->swizzle ? 1u : 0u); sw++)
      for (int op = 0; op <= n_cu; op++) {
        if (!cl && !sw && !op) continue;
        cand c = cand_of(a, base->tile, base->stages);
        c.splitk = base->splitk, c.red = base->red, c.cluster = CLUSTERS[cl], c.swizzle = sw, c.custom = (uint32_t)op;
        int rc;
        if (valid(B, p, &c) && (rc = try_cand(B, p, S, &c, 2))) return rc;
      }
  return 0;
}

static int level2(bench *B, const problem *p, const algo_caps *caps, int n_caps, const cand *seed, cand_list *S,
                  int *capped) {
  int n = S->n, rc = 0;
  cand *bases = malloc((size_t)(n ? n : 1) * sizeof *bases); /* S grows below: copies */
  if (!bases) return -1;
  if (n) memcpy(bases, S->v, (size_t)n * sizeof *bases);
  for (int i = 0; i < n; i++)
    bases[i].seed = seed && seed->id == bases[i].id && seed->tile == bases[i].tile && seed->stages == bases[i].stages;
  if (n) qsort(bases, (size_t)n, sizeof *bases, by_seed_ms);
  for (int i = 0; i < n && !rc; i++) {
    if (bases[i].ms < 0) continue;
    const algo_caps *a = caps;
    while (a < caps + n_caps && a->id != bases[i].id) a++;
    if (a < caps + n_caps) rc = level2_base(B, p, &bases[i], a, S);
  }
  if (rc > 0) *capped = 1;
  free(bases);
  return rc < 0 ? -1 : 0;
}

typedef struct {
  int ids, usable, fma, groups, l0, l1, l2, capped, enum_cut;
  double enum_s;
} search_stats;

/* Searches p's configurations into S. The heuristic's fastest (id, tile) and (id, tile, stages) go first at L1, L2. */
static int search(bench *B, const problem *p, const cand_list *H, cand_list *S, search_stats *st) {
  int ids[MAX_IDS], n_ids = 0, n_caps = 0, rc = -1;
  const cand *seed = NULL;
  memset(st, 0, sizeof *st);
  for (int i = 0; i < H->n; i++)
    if (H->v[i].ms > 0 && (!seed || H->v[i].ms < seed->ms)) seed = &H->v[i];
  if (ltc(B,
          cublasLtMatmulAlgoGetIds(B->lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF,
                                   CUDA_R_16BF, MAX_IDS, ids, &n_ids),
          "cublasLtMatmulAlgoGetIds"))
    return -1;
  algo_caps *caps = calloc((size_t)(n_ids ? n_ids : 1), sizeof *caps);
  group *g = NULL;
  if (!caps) return -1;
  for (int i = 0; i < n_ids; i++) {
    int r = caps_read(B, p, ids[i], &caps[n_caps]);
    n_caps += r == 1, st->fma += r == 2;
  }
  double t0 = now_s();
  int n_g = groups_build(B, p, caps, n_caps, &g, &st->enum_cut);
  st->ids = n_ids, st->usable = n_caps, st->groups = n_g, st->enum_s = now_s() - t0, st->capped = st->enum_cut;
  fprintf(stderr, "  search: %d ids, %d usable, %d (id, tile) groups, %d checks in %.1f s%s\n", n_ids, n_caps, n_g,
          B->checks, st->enum_s, st->enum_cut ? " (time limit: cut)" : "");
  double end = now_s() + B->time_limit_s; /* split like the cap: L0 half, L1 half of the rest, L2 the rest */
  B->deadline = end - 0.5 * B->time_limit_s;
  if (n_g >= 0 && !level0(B, p, g, n_g, S, &st->capped)) {
    st->l0 = B->timed, B->deadline = end - 0.5 * (end - now_s());
    if (!level1(B, p, g, n_g, seed, S, &st->capped)) {
      st->l1 = B->timed - st->l0, B->deadline = end;
      if (!level2(B, p, caps, n_caps, seed, S, &st->capped)) st->l2 = B->timed - st->l0 - st->l1, rc = 0;
    }
  }
  for (int i = 0; i < n_g; i++) free(g[i].stages);
  for (int i = 0; i < n_caps; i++) free(caps[i].tiles), free(caps[i].stages);
  free(g), free(caps);
  return rc;
}

/* ---- the agreement check ----------------------------------------------------------------------------------------- */

static int slices(bench *B, const problem *p, const cand *c, uint16_t *out) {
  size_t total = (size_t)p->m * (size_t)p->n, n = total < SLICE ? total : SLICE;
  size_t at[3] = {0, total / 2 - n / 2, total - n};
  if ((p->beta != 0.0f && fill(B, p->y, total, 3333333)) || run(B, p, &c->algo, 0) < 0) return -1;
  for (int i = 0; i < 3; i++)
    if (cu(B, cudaMemcpy(out + i * n, (const uint16_t *)p->y + at[i], n * 2, cudaMemcpyDeviceToHost), "copy y"))
      return -1;
  return 0;
}

/* max |y_a - y_b| / max |y_b| over three slices of y; -1 when it cannot be computed. */
static double agree(bench *B, const problem *p, const cand *a, const cand *b) {
  size_t total = (size_t)p->m * (size_t)p->n, n = 3 * (total < SLICE ? total : SLICE);
  uint16_t *ya = malloc(n * 2), *yb = malloc(n * 2);
  double diff = 0, mag = 0, r = -1;
  if (ya && yb && !slices(B, p, a, ya) && !slices(B, p, b, yb)) {
    for (size_t i = 0; i < n; i++) {
      double u = bf2f(ya[i]), v = bf2f(yb[i]);
      diff = fmax(diff, isfinite(u - v) ? fabs(u - v) : INFINITY), mag = fmax(mag, fabs(v));
    }
    r = mag > 0 ? diff / mag : diff;
  }
  free(ya), free(yb);
  return r;
}

/* ---- report ------------------------------------------------------------------------------------------------------ */

static int by_ms(const void *a, const void *b) { /* screening median, refused last */
  float x = ((const cand *)a)->ms, y = ((const cand *)b)->ms;
  if (x < 0 || y < 0) return (x < 0) - (y < 0);
  return (x > y) - (x < y);
}

static const cand *best_conf(const cand_list *l) {
  const cand *b = NULL;
  for (int i = 0; i < l->n; i++)
    if (l->v[i].conf > 0 && (!b || l->v[i].conf < b->conf)) b = &l->v[i];
  return b;
}

static double tflops(const problem *p, double ms) {
  return 2.0 * (double)p->m * p->n * p->k / (ms * 1e9);
}

static void print_cand(const problem *p, const cand *c, int rank) {
  char cfg[96];
  cfg_str(c, cfg, sizeof cfg);
  fprintf(stderr, "    %2d  %-26s %s%d  screen %8.4f ms", rank, cfg, c->heur >= 0 ? "heur " : "L",
          c->heur >= 0 ? c->heur : c->level, c->ms);
  if (c->conf > 0) fprintf(stderr, "  confirm %8.4f ms %5.0f TFLOP/s", c->conf, tflops(p, c->conf));
  fprintf(stderr, "  ws %zu  waves %.2f%s\n", c->ws, c->waves, c->inner ? "  (inner shape set)" : "");
}

static void json_ms(const char *key, const problem *p, const cand *c, const char *tkey, const char *ckey) {
  char cfg[96];
  if (!c) {
    printf(",\"%s\":null,\"%s\":null,\"%s\":null", key, tkey, ckey);
    return;
  }
  cfg_str(c, cfg, sizeof cfg);
  printf(",\"%s\":%.4f,\"%s\":%.1f,\"%s\":\"%s\"", key, c->conf, tkey, tflops(p, c->conf), ckey, cfg);
}

static void report(const problem *p, const cand_list *H, const cand_list *E, const cand_list *S, const search_stats *st,
                   int n64, bench *B, double rel, double t0) {
  const cand *hb = best_conf(H), *eb = best_conf(E), *sb = best_conf(S), *hf = NULL;
  for (int i = 0; i < H->n; i++)
    if (H->v[i].heur == 0 && H->v[i].conf > 0) hf = &H->v[i];
  if (eb && hb && hb->conf <= eb->conf) eb = hb;
  if (!eb) eb = hb;
  printf("{\"shape\":[%lld,%d,%d],\"epi\":\"%s\",\"heuristic_n\":%d,\"heuristic64_n\":%d", p->m, p->n, p->k, p->epi,
         H->n, n64);
  json_ms("heuristic_best_ms", p, hb, "heuristic_best_tflops", "heuristic_best_cfg");
  printf(",\"heuristic_first_ms\":");
  hf ? printf("%.4f", hf->conf) : printf("null");
  json_ms("heuristic64_best_ms", p, eb, "heuristic64_best_tflops", "heuristic64_best_cfg");
  printf(",\"exhaustive_timed\":%d", B->timed);
  json_ms("exhaustive_best_ms", p, sb, "exhaustive_best_tflops", "exhaustive_best_cfg");
  if (hb && sb)
    printf(",\"gain\":%.4f,\"same_as_heuristic\":%s", hb->conf / sb->conf, same_cfg(hb, sb) ? "true" : "false");
  else
    printf(",\"gain\":null");
  if (hf && sb) printf(",\"gain_vs_first\":%.4f", hf->conf / sb->conf);
  int found = 0; /* is the heuristic's best configuration inside the searched space at all? */
  for (int i = 0; hb && i < S->n && !found; i++) found = same_cfg(hb, &S->v[i]);
  printf(",\"heuristic_best_searched\":%s", found ? "true" : "false");
  printf(",\"agree_rel\":");
  rel >= 0 && isfinite(rel) ? printf("%.3e", rel) : printf("null");
  printf(",\"capped\":%s,\"cap\":%d,\"enum_cut\":%s,\"time_cut\":%s", st->capped || B->time_cut ? "true" : "false",
         B->cap, st->enum_cut ? "true" : "false", B->time_cut ? "true" : "false");
  printf(",\"algo_ids\":%d,\"algo_ids_usable\":%d,\"fma_ids_skipped\":%d,\"groups\":%d", st->ids, st->usable, st->fma,
         st->groups);
  printf(",\"l0\":%d,\"l1\":%d,\"l2\":%d,\"checks\":%d,\"run_failures\":%d,\"enum_s\":%.2f,\"search_s\":%.2f}\n",
         st->l0, st->l1, st->l2, B->checks, B->run_fail, st->enum_s, now_s() - t0);
  fflush(stdout);
}

static void print_lists(const problem *p, const cand_list *H, const cand_list *S) {
  fprintf(stderr, "  heuristic (8), fastest first:\n");
  for (int i = 0; i < H->n; i++) print_cand(p, &H->v[i], i + 1);
  fprintf(stderr, "  search, top 10 of %d:\n", S->n);
  for (int i = 0; i < S->n && i < 10; i++) print_cand(p, &S->v[i], i + 1);
}

/* ---- one shape --------------------------------------------------------------------------------------------------- */

/* Heuristic answers for 8 into H and those of 64 not among them into E, all screened. -1 on error. */
static int heuristic_lists(bench *B, const problem *p, cand_list *H, cand_list *E, int *n64) {
  cand_list all = {0};
  if (heuristic(B, p, 8, H) <= 0 || (*n64 = heuristic(B, p, 64, &all)) < 0) {
    free(all.v);
    if (!H->n && !B->err[0]) snprintf(B->err, sizeof B->err, "the heuristic found no algorithm");
    return -1;
  }
  for (int i = 0; i < all.n; i++) {
    int dup = 0;
    for (int j = 0; j < H->n; j++) dup |= !memcmp(&all.v[i].algo, &H->v[j].algo, sizeof all.v[i].algo);
    if (!dup && push(E, &all.v[i])) return free(all.v), -1;
  }
  free(all.v);
  if (warm_up(B, p, &H->v[0].algo)) return -1;
  for (int i = 0; i < H->n; i++)
    if (screen(B, p, &H->v[i])) return -1;
  for (int i = 0; i < E->n; i++)
    if (screen(B, p, &E->v[i])) return -1;
  return 0;
}

/* The search's 5 best, the heuristic's first and 3 best, the best of the other 56: median of 20. */
static int confirm_all(bench *B, const problem *p, cand_list *H, cand_list *E, cand_list *S) {
  if (H->n) qsort(H->v, (size_t)H->n, sizeof *H->v, by_ms);
  if (E->n) qsort(E->v, (size_t)E->n, sizeof *E->v, by_ms);
  if (S->n) qsort(S->v, (size_t)S->n, sizeof *S->v, by_ms);
  for (int i = 0; i < H->n; i++)
    if ((i < 3 || H->v[i].heur == 0) && confirm(B, p, &H->v[i])) return -1;
  if (E->n && confirm(B, p, &E->v[0])) return -1;
  for (int i = 0; i < S->n && i < 5; i++)
    if (confirm(B, p, &S->v[i])) return -1;
  return 0;
}

/* 0, or -1 after a CUDA error that may have left the context unusable. */
static int run_shape(bench *B, const shape *sh) {
  problem p;
  cand_list H = {0}, E = {0}, S = {0};
  search_stats st;
  int n64 = 0, rc = -1;
  double t0 = now_s(), rel = -1;
  B->best = -1.0f, B->timed = B->run_fail = B->checks = B->time_cut = 0, B->err[0] = 0;
  memset(&st, 0, sizeof st);
  fprintf(stderr, "gemm_search: %lld x %d x %d %s\n", sh->m, sh->n, sh->k, sh->epi);
  if (!problem_open(B, &p, sh) && !heuristic_lists(B, &p, &H, &E, &n64) && !search(B, &p, &H, &S, &st) &&
      !confirm_all(B, &p, &H, &E, &S)) {
    const cand *hb = best_conf(&H), *sb = best_conf(&S);
    if (hb && sb) rel = agree(B, &p, sb, hb);
    if (!B->fatal) {
      print_lists(&p, &H, &S);
      report(&p, &H, &E, &S, &st, n64, B, rel, t0);
      rc = 0;
    }
  }
  if (rc) {
    if (!B->fatal) (void)cudaGetLastError(); /* e.g. a failed cudaMalloc: the next shape starts clean */
    for (char *c = B->err; *c; c++)
      if (*c == '"' || *c == '\\') *c = '\'';
    printf("{\"shape\":[%lld,%d,%d],\"epi\":\"%s\",\"error\":\"%s\",\"search_s\":%.2f}\n", sh->m, sh->n, sh->k, sh->epi,
           B->err[0] ? B->err : "out of memory", now_s() - t0);
    fflush(stdout);
  }
  problem_close(&p);
  free(H.v), free(E.v), free(S.v);
  return B->fatal ? -1 : 0;
}

/* ---- main -------------------------------------------------------------------------------------------------------- */

static int bench_open(bench *B) {
  uint32_t s = 0x9E3779B9u;
  if (cu(B, cudaSetDevice(0), "cudaSetDevice") || ltc(B, cublasLtCreate(&B->lt), "cublasLtCreate") ||
      cu(B, cudaStreamCreateWithFlags(&B->s, cudaStreamNonBlocking), "stream") ||
      cu(B, cudaEventCreate(&B->e0), "event") || cu(B, cudaEventCreate(&B->e1), "event") ||
      cu(B, cudaMalloc(&B->ws, WS_BYTES), "workspace") ||
      cu(B, cudaMallocHost((void **)&B->pattern, (size_t)PATTERN * 2), "pinned pattern"))
    return -1;
  for (int i = 0; i < PATTERN; i++) { /* xorshift32 -> [-1, 1) */
    s ^= s << 13, s ^= s >> 17, s ^= s << 5;
    B->pattern[i] = f2bf((float)(s >> 8) * (2.0f / 16777216.0f) - 1.0f);
  }
  return 0;
}

static int usage(const char *arg) {
  fprintf(stderr,
          "gemm_search: bad argument '%s'\nusage: gemm_search [--quick] [--splitk] [--cap N] [M N K EPI ...]\n"
          "  EPI: none, bias, gelu_bias, residual, bias_residual\n",
          arg);
  return 2;
}

int main(int argc, char **argv) {
  static bench B;
  shape *shapes = calloc((size_t)argc + sizeof BUILTIN / sizeof BUILTIN[0], sizeof *shapes);
  int n = 0, cap = 0, fails = 0;
  if (!shapes) return 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick"))
      B.quick = 1;
    else if (!strcmp(argv[i], "--splitk"))
      B.splitk = 1;
    else if (!strcmp(argv[i], "--cap")) {
      if (i + 1 == argc || (cap = atoi(argv[++i])) <= 0) return usage(argv[i]);
    } else if (argv[i][0] != '-' && i + 3 < argc) {
      shapes[n++] = (shape){atoll(argv[i]), atoi(argv[i + 1]), atoi(argv[i + 2]), argv[i + 3]};
      i += 3;
    } else
      return usage(argv[i]);
  }
  if (!n) memcpy(shapes, BUILTIN, sizeof BUILTIN), n = (int)(sizeof BUILTIN / sizeof BUILTIN[0]);
  B.cap = cap ? cap : B.quick ? 150 : 400;
  B.reps = B.quick ? 3 : 5;
  B.enum_limit_s = B.quick ? 4.0 : 8.0;
  B.time_limit_s = B.quick ? 8.0 : 15.0;
  if (bench_open(&B)) return 1; /* the error is printed */
  double t0 = now_s();
  for (int i = 0; i < n; i++)
    if (run_shape(&B, &shapes[i])) {
      fprintf(stderr, "gemm_search: stopping: a CUDA error may have left the device unusable\n");
      fails = 1;
      break;
    }
  fprintf(stderr, "gemm_search: %d shapes in %.1f s\n", n, now_s() - t0);
  cudaFreeHost(B.pattern), cudaFree(B.ws), cudaEventDestroy(B.e0), cudaEventDestroy(B.e1);
  cudaStreamDestroy(B.s), cublasLtDestroy(B.lt);
  free(shapes);
  return fails;
}
