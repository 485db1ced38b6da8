/* The fused gate|up GEMM + SwiGLU (gemm_swiglu.cu, backend.h linear_swiglu) against two references on the same
 * bf16 inputs, drawn fresh each run (QVL_TEST_SEED replays): the CPU backend's linear + swiglu in f32 (relative L2
 * <= 1e-2), and the CUDA backend's cuBLASLt linear + swiglu.cu, which round at the same steps and differ only in
 * the order of the f32 sums (relative L2 <= 4e-3, at most 1 in 1,000 outputs (1 of fewer) more than 2 bf16 ulps
 * apart). Every output row must be written and finite (y is NaN first) and the rows past m untouched (guard rows).
 *   silu: all 65,536 bf16 gate values through both paths with exact GEMMs (x = [g, 1, 0 ...], w = e0 / e1 rows),
 *     bit for bit: the kernel's division-free silu (swiglu.cuh) against swiglu.cu's.
 *   shapes: m 1, 77, 300, 4097 x f 128, 384 x k 64, 1280, with and without bias (one tile per CTA or fewer).
 *   persistent: several tiles per CTA, k steps 1, 5 and 20 (the epilogue warps' hand-over buffer reused tile after
 *     tile, with short and long main loops), a weight matrix over 24 MB (the banded tile order), CPU rows sampled.
 *   Each kernel case runs the default variant and the two-CTA cluster variant (weights multicast) where it runs.
 *   graph: one launch captured and replayed on new x. refusals: f % 128, k % 64, misalignment answer
 *     QVL_ERR_UNSUPPORTED with nothing written and b->err clear, and gate_up.c's fallback gives linear + swiglu.
 * Skips, saying why, without a GPU, or (all but the refusals) without compute capability 9.0. A kernel that
 * deadlocks (an mbarrier protocol error) fails after a time limit instead of hanging.
 *
 * QVL_GEMM_SWIGLU_BENCH=1 also times (3 warm-ups, median of 25, CUDA events) the fused kernel (both variants)
 * against the backend's tuned cuBLASLt linear + swiglu at (m, 2f, k) = (65536, 6912, 1280) [Qwen2.5-VL tower, 64
 * images], (11264, 6912, 1280) [11 images], (1735, 37888, 3584) [language model prefill], (4096, 37888, 3584): one
 * line per shape, TFLOP/s counted as 2 m 2f k. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_ops.h"
#include "core/half.h"
#include "models/model.h"
#include "testutil.h"

enum { GUARD = 3 };
static const uint16_t POISON = 0xffff; /* NaN */

typedef struct env {
  qvl_backend *cpu, *gpu;
  qvl_err err;
  uint64_t rng;
  int clusters; /* the two-CTA variant runs here */
} env;

static env E;

static cudaStream_t stream(void) { return ((cuda_ctx *)E.gpu->ctx)->stream; }

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Waits for the backend's stream, but gives up after 60 s: a kernel that deadlocks would otherwise hold the GPU
 * until ctest's timeout; exiting tears the context down. */
static void wait_stream(const char *what) {
  double t0 = now_s();
  cudaError_t e;
  while ((e = cudaStreamQuery(stream())) == cudaErrorNotReady) {
    if (now_s() - t0 > 60) {
      printf("  %s: the kernel did not finish in 60 s (deadlock?); exiting\n", what);
      fflush(stdout);
      exit(1);
    }
    struct timespec ns = {0, 200000};
    nanosleep(&ns, NULL);
  }
  if (e != cudaSuccess) fail_msg("%s: %s", what, cudaGetErrorString(e));
}

/* ---- buffers ------------------------------------------------------------------------------------------------ */

/* n bf16 values uniform in [lo, hi) (bits), and the same as floats. */
static uint16_t *rnd_bf16(size_t n, float lo, float hi, float **as_f32) {
  float *f = malloc(n * sizeof(float));
  uint16_t *h = malloc(n * 2);
  tu_uniform(f, n, lo, hi, &E.rng);
  for (size_t i = 0; i < n; i++) {
    h[i] = qvl_f32_to_bf16(f[i]);
    f[i] = qvl_bf16_to_f32(h[i]);
  }
  if (as_f32) *as_f32 = f;
  else free(f);
  return h;
}

static void *dev_bytes(const void *h, size_t bytes) {
  void *d;
  assert_int_equal(E.gpu->alloc(E.gpu, &d, bytes), QVL_OK);
  if (h) assert_int_equal(E.gpu->upload(E.gpu, d, h, bytes), QVL_OK);
  return d;
}

/* A device y of rows x f bf16, all NaN. */
static void *dev_poisoned(int64_t rows, int f) {
  size_t n = (size_t)rows * f;
  uint16_t *h = malloc(n * 2);
  for (size_t i = 0; i < n; i++) h[i] = POISON;
  void *d = dev_bytes(h, n * 2);
  free(h);
  return d;
}

static uint16_t *download(const void *d, size_t n) {
  uint16_t *h = malloc(n * 2);
  assert_int_equal(E.gpu->download(E.gpu, h, d, n * 2), QVL_OK);
  return h;
}

/* ---- comparisons -------------------------------------------------------------------------------------------- */

static int ulps(uint16_t a, uint16_t b) {
  int ka = (a & 0x8000) ? -(int)(a & 0x7fff) : (int)a, kb = (b & 0x8000) ? -(int)(b & 0x7fff) : (int)b;
  return abs(ka - kb);
}

/* Rows < m finite, rows m .. m + GUARD still the poison. */
static void check_written(const char *name, const uint16_t *y, int64_t m, int f) {
  size_t bad = 0, guard = 0;
  for (size_t i = 0; i < (size_t)m * f; i++) bad += !isfinite(qvl_bf16_to_f32(y[i]));
  for (size_t i = (size_t)m * f; i < (size_t)(m + GUARD) * f; i++) guard += y[i] != POISON;
  if (bad || guard) fail_msg("%s: %zu outputs not finite (unwritten?), %zu guard elements changed", name, bad, guard);
}

/* y against the unfused GPU path z (same roundings): relative L2, outputs more than 2 ulps apart, bit-equal share. */
static void check_gpu(const char *name, const uint16_t *y, const uint16_t *z, size_t n) {
  double e = 0, r = 0;
  size_t far = 0, same = 0;
  int worst = 0;
  for (size_t i = 0; i < n; i++) {
    double a = qvl_bf16_to_f32(y[i]), b = qvl_bf16_to_f32(z[i]);
    e += (a - b) * (a - b), r += b * b;
    int u = ulps(y[i], z[i]);
    far += u > 2, same += u == 0;
    if (u > worst) worst = u;
  }
  double rel = sqrt(e / (r > 0 ? r : 1));
  printf("  %-44s vs cuBLASLt+swiglu: rel_l2 %.2e, %.4f%% bit-equal, %zu > 2 ulps (max %d)\n", name, rel,
         100.0 * (double)same / (double)n, far, worst);
  if (!(rel <= 4e-3)) fail_msg("%s: rel_l2 %.3e against the unfused GPU path > 4e-3", name, rel);
  if (far > (n < 1000 ? 1 : n / 1000)) /* a row's few outputs: one near a cancellation may be 3-4 ulps off */
    fail_msg("%s: %zu of %zu outputs more than 2 ulps from the unfused GPU path", name, far, n);
}

/* rows of y (indices `rows`, n_rows of them) against the f32 CPU reference ref [n_rows][f]. */
static void check_cpu(const char *name, const uint16_t *y, const int64_t *rows, int64_t n_rows, const float *ref,
                      int f) {
  double e = 0, r = 0;
  for (int64_t i = 0; i < n_rows; i++)
    for (int j = 0; j < f; j++) {
      double a = qvl_bf16_to_f32(y[rows[i] * f + j]), b = ref[i * f + j];
      e += (a - b) * (a - b), r += b * b;
    }
  double rel = sqrt(e / (r > 0 ? r : 1));
  printf("  %-44s vs CPU f32 (%lld rows): rel_l2 %.2e\n", name, (long long)n_rows, rel);
  if (!(rel <= 1e-2)) fail_msg("%s: rel_l2 %.3e against the CPU > 1e-2", name, rel);
}

/* ---- one case ----------------------------------------------------------------------------------------------- */

typedef struct problem {
  int64_t m;
  int f, k, bias;
  float *x, *w, *b;      /* host floats (bf16 values) */
  void *dx, *dw, *db;    /* device bf16 */
  uint16_t *ref_gpu;     /* cuBLASLt linear + swiglu.cu, [m][f] */
} problem;

static void problem_make(problem *p, int64_t m, int f, int k, int bias) {
  memset(p, 0, sizeof *p);
  p->m = m, p->f = f, p->k = k, p->bias = bias;
  uint16_t *hx = rnd_bf16((size_t)m * k, -2, 2, &p->x), *hw = rnd_bf16((size_t)2 * f * k, -0.05f, 0.05f, &p->w);
  uint16_t *hb = rnd_bf16((size_t)2 * f, -0.5f, 0.5f, &p->b);
  p->dx = dev_bytes(hx, (size_t)m * k * 2), p->dw = dev_bytes(hw, (size_t)2 * f * k * 2);
  p->db = dev_bytes(hb, (size_t)2 * f * 2);
  free(hx), free(hw), free(hb);
  void *gu = dev_poisoned(m, 2 * f), *z = dev_poisoned(m, f);
  assert_int_equal(E.gpu->linear(E.gpu, gu, p->dx, p->dw, bias ? p->db : NULL, m, 2 * f, k, QVL_EPI_NONE), QVL_OK);
  assert_int_equal(E.gpu->swiglu(E.gpu, z, gu, m, f), QVL_OK);
  p->ref_gpu = download(z, (size_t)m * f);
  E.gpu->free(E.gpu, gu), E.gpu->free(E.gpu, z);
}

static void problem_free(problem *p) {
  E.gpu->free(E.gpu, p->dx), E.gpu->free(E.gpu, p->dw), E.gpu->free(E.gpu, p->db);
  free(p->x), free(p->w), free(p->b), free(p->ref_gpu);
}

/* The CPU's linear + swiglu on the rows `rows` of x: ref [n_rows][f]. */
static float *cpu_ref(const problem *p, const int64_t *rows, int64_t n_rows) {
  const int f = p->f, k = p->k;
  float *xs = malloc((size_t)n_rows * k * sizeof(float)), *gu = malloc((size_t)n_rows * 2 * f * sizeof(float));
  float *ref = malloc((size_t)n_rows * f * sizeof(float));
  for (int64_t i = 0; i < n_rows; i++) memcpy(xs + i * k, p->x + rows[i] * k, (size_t)k * sizeof(float));
  assert_int_equal(E.cpu->linear(E.cpu, gu, xs, p->w, p->bias ? p->b : NULL, n_rows, 2 * f, k, QVL_EPI_NONE), QVL_OK);
  assert_int_equal(E.cpu->swiglu(E.cpu, ref, gu, n_rows, f), QVL_OK);
  free(xs), free(gu);
  return ref;
}

/* The fused kernel (variant cluster: 0 through the backend op, 1 or 2 forced) into a poisoned y with guard rows. */
static uint16_t *run_fused(const problem *p, int cluster) {
  void *y = dev_poisoned(p->m + GUARD, p->f);
  const void *bias = p->bias ? p->db : NULL;
  int rc = cluster ? cuda_linear_swiglu_debug(cluster, y, p->dx, p->dw, bias, p->m, p->f, p->k, stream())
                   : E.gpu->linear_swiglu(E.gpu, y, p->dx, p->dw, bias, p->m, p->f, p->k);
  assert_int_equal(rc, QVL_OK);
  wait_stream("linear_swiglu");
  uint16_t *h = download(y, (size_t)(p->m + GUARD) * p->f);
  E.gpu->free(E.gpu, y);
  return h;
}

/* The variant a test runs: 0 (the backend op, the default variant) unless its cmocka state points at 2 (the
 * cluster variant, forced); those cases run last, so that a deadlock there leaves the default's results printed. */
static int variant(void **s) { return *s ? *(const int *)*s : 0; }
static const char *variant_name(int cl) { return cl == 2 ? " [cluster 2]" : ""; }

/* Variant cl on problem p; CPU rows: all when sample is 0, else every sample-th and the last. */
static void check_problem(const problem *p, int sample, int cl) {
  int64_t n_rows = 0, *rows = malloc((size_t)p->m * sizeof(int64_t));
  for (int64_t r = 0; r < p->m; r++)
    if (!sample || r % sample == 0 || r == p->m - 1) rows[n_rows++] = r;
  float *ref = cpu_ref(p, rows, n_rows);
  char name[96];
  snprintf(name, sizeof name, "m %lld f %d k %d%s%s", (long long)p->m, p->f, p->k, p->bias ? " bias" : "",
           variant_name(cl));
  uint16_t *y = run_fused(p, cl);
  check_written(name, y, p->m, p->f);
  check_gpu(name, y, p->ref_gpu, (size_t)p->m * p->f);
  check_cpu(name, y, rows, n_rows, ref, p->f);
  free(y), free(rows), free(ref);
}

/* ---- tests -------------------------------------------------------------------------------------------------- */

/* All 65,536 bf16 gate values g (row r has g = bits r) with u = 1, both through exact GEMMs (one nonzero product
 * per sum), no bias: y = bf16(silu(g)) must equal swiglu.cu's bit for bit (NaN as NaN). */
static int bf16_same(uint16_t a, uint16_t b) {
  const int nan_a = (a & 0x7fff) > 0x7f80, nan_b = (b & 0x7fff) > 0x7f80;
  return a == b || (nan_a && nan_b) || ((a | b) & 0x7fff) == 0; /* NaN as NaN, +0 as -0 */
}

static void test_silu_all_bf16(void **s) {
  const int cl = variant(s);
  if (cl == 2 && !E.clusters) skip();
  const int64_t m = 65536;
  const int f = 128, k = 64;
  uint16_t *hx = calloc((size_t)m * k, 2), *hw = calloc((size_t)2 * f * k, 2);
  for (int64_t r = 0; r < m; r++) hx[r * k] = (uint16_t)r, hx[r * k + 1] = 0x3f80; /* [g, 1, 0, ...] */
  for (int j = 0; j < f; j++) hw[(size_t)j * k] = 0x3f80, hw[(size_t)(f + j) * k + 1] = 0x3f80; /* e0, e1 */
  problem p = {.m = m, .f = f, .k = k};
  p.dx = dev_bytes(hx, (size_t)m * k * 2), p.dw = dev_bytes(hw, (size_t)2 * f * k * 2);
  void *gu = dev_poisoned(m, 2 * f), *z = dev_poisoned(m, f);
  assert_int_equal(E.gpu->linear(E.gpu, gu, p.dx, p.dw, NULL, m, 2 * f, k, QVL_EPI_NONE), QVL_OK);
  assert_int_equal(E.gpu->swiglu(E.gpu, z, gu, m, f), QVL_OK);
  uint16_t *ref = download(z, (size_t)m * f);
  uint16_t *y = run_fused(&p, cl);
  size_t bad = 0;
  for (int64_t r = 0; r < m; r++)
    for (int j = 0; j < f; j++) {
      const uint16_t a = y[r * f + j], b = ref[r * f + j];
      if (!bf16_same(a, b) && bad++ < 8)
        printf("    g 0x%04x (%g) column %d: fused 0x%04x, swiglu.cu 0x%04x\n", (unsigned)r,
               qvl_bf16_to_f32((uint16_t)r), j, a, b);
    }
  printf("  silu over all 65,536 bf16 gate values%s: %zu of %lld outputs differ from swiglu.cu\n", variant_name(cl),
         bad, (long long)(m * f));
  if (bad) fail_msg("%zu outputs differ from swiglu.cu", bad);
  free(y);
  E.gpu->free(E.gpu, gu), E.gpu->free(E.gpu, z), E.gpu->free(E.gpu, p.dx), E.gpu->free(E.gpu, p.dw);
  free(hx), free(hw), free(ref);
}

static void test_shapes(void **s) {
  const int cl = variant(s);
  if (cl == 2 && !E.clusters) skip();
  static const int64_t ms[] = {1, 77, 300, 4097};
  static const int fs[] = {128, 384}, ks[] = {64, 1280};
  int i = 0;
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 2; b++)
      for (int c = 0; c < 2; c++, i++) {
        problem p;
        problem_make(&p, ms[a], fs[b], ks[c], 1);
        check_problem(&p, 0, cl);
        if (i % 3 == 0) { /* the same operands without bias */
          free(p.ref_gpu);
          p.bias = 0;
          void *gu = dev_poisoned(p.m, 2 * p.f), *z = dev_poisoned(p.m, p.f);
          assert_int_equal(E.gpu->linear(E.gpu, gu, p.dx, p.dw, NULL, p.m, 2 * p.f, p.k, QVL_EPI_NONE), QVL_OK);
          assert_int_equal(E.gpu->swiglu(E.gpu, z, gu, p.m, p.f), QVL_OK);
          p.ref_gpu = download(z, (size_t)p.m * p.f);
          E.gpu->free(E.gpu, gu), E.gpu->free(E.gpu, z);
          check_problem(&p, 0, cl);
        }
        problem_free(&p);
      }
}

static void test_persistent(void **s) {
  const int cl = variant(s);
  if (cl == 2 && !E.clusters) skip();
  static const struct { int64_t m; int f, k, bias, sample; } C[] = {
    {8269, 1280, 1280, 1, 29}, /* 650 tiles: about 5 per CTA, 20 k steps */
    {20000, 384, 64, 1, 97},   /* 471 tiles of 1 k step: the previous tile's outputs all in one step */
    {3000, 384, 320, 0, 13},   /* 5 k steps */
    {5000, 2048, 3584, 0, 61}, /* w 29 MB: bands of 18 m-tiles (16 at cluster 2), m fastest within */
  };
  for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
    problem p;
    problem_make(&p, C[i].m, C[i].f, C[i].k, C[i].bias);
    check_problem(&p, C[i].sample, cl);
    problem_free(&p);
  }
}

/* One launch captured through the backend's graph ops, replayed after x changed: the same bits as an eager launch
 * on the new x (the kernel's sums run in a fixed order). */
static void test_graph(void **s) {
  (void)s;
  problem p;
  problem_make(&p, 1000, 384, 1280, 1);
  void *y = dev_poisoned(p.m + GUARD, p.f), *graph = NULL;
  assert_int_equal(E.gpu->graph_begin(E.gpu), QVL_OK);
  assert_int_equal(E.gpu->linear_swiglu(E.gpu, y, p.dx, p.dw, p.db, p.m, p.f, p.k), QVL_OK);
  assert_int_equal(E.gpu->graph_end(E.gpu, &graph), QVL_OK);
  uint16_t *hx = rnd_bf16((size_t)p.m * p.k, -2, 2, NULL);
  assert_int_equal(E.gpu->upload(E.gpu, p.dx, hx, (size_t)p.m * p.k * 2), QVL_OK);
  assert_int_equal(E.gpu->graph_launch(E.gpu, graph), QVL_OK);
  wait_stream("graph replay");
  uint16_t *got = download(y, (size_t)(p.m + GUARD) * p.f), *want = run_fused(&p, 0);
  check_written("graph replay", got, p.m, p.f);
  assert_memory_equal(got, want, (size_t)p.m * p.f * 2);
  printf("  graph replay on new x: the eager launch's bits\n");
  E.gpu->graph_free(E.gpu, graph);
  E.gpu->free(E.gpu, y);
  free(hx), free(got), free(want);
  problem_free(&p);
}

/* Shapes and pointers the kernel refuses: QVL_ERR_UNSUPPORTED, y untouched, b->err clear; gate_up.c then runs
 * linear + swiglu (the same bits as the two ops). Where the kernel does not run, the backend has no linear_swiglu
 * and gate_up.c runs the two ops. */
static void test_refusals(void **s) {
  (void)s;
  const int64_t m = 300;
  static const struct { int f, k, shift; const char *why; } C[] = {
    {100, 256, 0, "f % 128"}, {128, 96, 0, "k % 64"}, {128, 256, 1, "y not 16-byte aligned"}};
  for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
    const int f = C[i].f, k = C[i].k;
    uint16_t *hx = rnd_bf16((size_t)m * k, -2, 2, NULL), *hw = rnd_bf16((size_t)2 * f * k, -0.05f, 0.05f, NULL);
    uint16_t *hb = rnd_bf16((size_t)2 * f, -0.5f, 0.5f, NULL);
    void *dx = dev_bytes(hx, (size_t)m * k * 2), *dw = dev_bytes(hw, (size_t)2 * f * k * 2);
    void *db = dev_bytes(hb, (size_t)2 * f * 2), *dy = dev_poisoned(m + 1, f), *gu = dev_poisoned(m, 2 * f);
    uint16_t *y = (uint16_t *)dy + C[i].shift;
    qvl_err_clear(&E.err);
    if (E.gpu->linear_swiglu) { /* NULL where the kernel does not run: only the fallback below */
      int rc = E.gpu->linear_swiglu(E.gpu, y, dx, dw, db, m, f, k);
      uint16_t *h = download(dy, (size_t)(m + 1) * f);
      size_t written = 0;
      for (size_t j = 0; j < (size_t)(m + 1) * f; j++) written += h[j] != POISON;
      printf("  refused (%s): %s, b->err %d, %zu outputs written\n", C[i].why, qvl_status_name(rc), E.err.code,
             written);
      assert_int_equal(rc, QVL_ERR_UNSUPPORTED);
      assert_int_equal(E.err.code, QVL_OK);
      assert_int_equal(written, 0);
      free(h);
    }
    /* the fallback: the same bits as linear + swiglu */
    void *z = dev_poisoned(m, f);
    assert_int_equal(mlp_gate_up(E.gpu, y, gu, dx, dw, db, m, f, k, 1), QVL_OK);
    assert_int_equal(E.gpu->linear(E.gpu, gu, dx, dw, db, m, 2 * f, k, QVL_EPI_NONE), QVL_OK);
    assert_int_equal(E.gpu->swiglu(E.gpu, z, gu, m, f), QVL_OK);
    uint16_t *got = download(y, (size_t)m * f), *want = download(z, (size_t)m * f);
    assert_memory_equal(got, want, (size_t)m * f * 2);
    E.gpu->free(E.gpu, dx), E.gpu->free(E.gpu, dw), E.gpu->free(E.gpu, db), E.gpu->free(E.gpu, dy);
    E.gpu->free(E.gpu, gu), E.gpu->free(E.gpu, z);
    free(hx), free(hw), free(hb), free(got), free(want);
  }
  printf("  gate_up.c fallback: linear + swiglu's bits\n");
}

/* gate_up.c on a shape the kernel runs: the fused op's bits by default, the two ops' without the op (as the backend
 * leaves it with QVL_FUSED_SWIGLU=0) or with fused = 0. */
static void test_gate_up(void **s) {
  (void)s;
  problem p;
  problem_make(&p, 500, 256, 1280, 1);
  void *y = dev_poisoned(p.m, p.f), *gu = dev_poisoned(p.m, 2 * p.f);
  uint16_t *fused = run_fused(&p, 0);
  assert_int_equal(mlp_gate_up(E.gpu, y, gu, p.dx, p.dw, p.db, p.m, p.f, p.k, 1), QVL_OK);
  uint16_t *got = download(y, (size_t)p.m * p.f);
  assert_memory_equal(got, fused, (size_t)p.m * p.f * 2);
  free(got);
  int (*op)(qvl_backend *, void *, const void *, const void *, const void *, int64_t, int, int) = E.gpu->linear_swiglu;
  E.gpu->linear_swiglu = NULL;
  assert_int_equal(mlp_gate_up(E.gpu, y, gu, p.dx, p.dw, p.db, p.m, p.f, p.k, 1), QVL_OK);
  E.gpu->linear_swiglu = op;
  got = download(y, (size_t)p.m * p.f);
  assert_memory_equal(got, p.ref_gpu, (size_t)p.m * p.f * 2);
  free(got);
  assert_int_equal(mlp_gate_up(E.gpu, y, gu, p.dx, p.dw, p.db, p.m, p.f, p.k, 0), QVL_OK);
  got = download(y, (size_t)p.m * p.f);
  assert_memory_equal(got, p.ref_gpu, (size_t)p.m * p.f * 2);
  printf("  gate_up.c: the fused op's bits by default, the two ops' without the op or with fused = 0\n");
  E.gpu->free(E.gpu, y), E.gpu->free(E.gpu, gu);
  free(got), free(fused);
  problem_free(&p);
}

/* ---- bench -------------------------------------------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

enum { WARM = 3, REPS = 25 };

/* Median ms of REPS runs of op (after WARM), one event pair per run. */
typedef int (*bench_fn)(void *ctx);
static float median_ms(bench_fn op, void *ctx) {
  cudaEvent_t e0, e1;
  float ms[REPS];
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  for (int i = 0; i < WARM; i++) assert_int_equal(op(ctx), QVL_OK);
  for (int i = 0; i < REPS; i++) {
    cudaEventRecord(e0, stream());
    assert_int_equal(op(ctx), QVL_OK);
    cudaEventRecord(e1, stream());
    wait_stream("bench");
    cudaEventElapsedTime(&ms[i], e0, e1);
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  qsort(ms, REPS, sizeof ms[0], cmp_float);
  return ms[REPS / 2];
}

typedef struct bench_case {
  int64_t m;
  int f, k, cluster;
  void *x, *w, *b, *y, *gu;
} bench_case;

static int op_fused(void *c) {
  bench_case *b = c;
  return cuda_linear_swiglu_debug(b->cluster, b->y, b->x, b->w, b->b, b->m, b->f, b->k, stream());
}
static int op_linear(void *c) {
  bench_case *b = c;
  return E.gpu->linear(E.gpu, b->gu, b->x, b->w, b->b, b->m, 2 * b->f, b->k, QVL_EPI_NONE);
}
static int op_swiglu(void *c) {
  bench_case *b = c;
  return E.gpu->swiglu(E.gpu, b->y, b->gu, b->m, b->f);
}

/* A device buffer of n bf16: 1 Mi random values in [lo, hi), repeated. */
static void *dev_random(size_t n, float lo, float hi) {
  const size_t chunk = (size_t)1 << 20;
  uint16_t *h = rnd_bf16(chunk, lo, hi, NULL);
  void *d = dev_bytes(NULL, n * 2);
  for (size_t i = 0; i < n; i += chunk)
    assert_int_equal(E.gpu->upload(E.gpu, (uint16_t *)d + i, h, (n - i < chunk ? n - i : chunk) * 2), QVL_OK);
  free(h);
  return d;
}

static void bench_shape(int64_t m, int two_f, int k, int bias, const char *what) {
  bench_case c = {.m = m, .f = two_f / 2, .k = k};
  c.x = dev_random((size_t)m * k, -2, 2), c.w = dev_random((size_t)two_f * k, -0.05f, 0.05f);
  c.b = bias ? dev_random((size_t)two_f, -0.5f, 0.5f) : NULL;
  c.y = dev_bytes(NULL, (size_t)m * c.f * 2), c.gu = dev_bytes(NULL, (size_t)m * two_f * 2);
  const double flop = 2.0 * (double)m * two_f * k;
  float fused[3] = {0, 0, 0};
  for (int cl = 1; cl <= (E.clusters ? 2 : 1); cl++) {
    c.cluster = cl;
    fused[cl] = median_ms(op_fused, &c);
  }
  const float lin = median_ms(op_linear, &c), swi = median_ms(op_swiglu, &c);
  /* a sanity look at the last fused output against the unfused one (the bench's operands repeat, not checked) */
  assert_int_equal(op_linear(&c), QVL_OK);
  assert_int_equal(op_swiglu(&c), QVL_OK);
  uint16_t *z = download(c.y, (size_t)c.f);
  c.cluster = 1;
  assert_int_equal(op_fused(&c), QVL_OK);
  wait_stream("bench");
  uint16_t *y = download(c.y, (size_t)c.f);
  int worst = 0;
  for (int j = 0; j < c.f; j++) worst = ulps(y[j], z[j]) > worst ? ulps(y[j], z[j]) : worst;
  printf("bench gemm_swiglu m %lld 2f %d k %d%s [%s]: fused %.3f ms %.0f TFLOP/s", (long long)m, two_f, k,
         bias ? " bias" : "", what, fused[1], flop / (fused[1] * 1e9));
  if (E.clusters) printf(" | cluster 2 %.3f ms %.0f TFLOP/s", fused[2], flop / (fused[2] * 1e9));
  printf(" | linear %.3f ms %.0f TFLOP/s + swiglu %.3f ms = %.3f ms | fused / unfused %.3f (row 0 max %d ulps)\n", lin,
         flop / (lin * 1e9), swi, lin + swi, fused[1] / (lin + swi), worst);
  fflush(stdout);
  E.gpu->free(E.gpu, c.x), E.gpu->free(E.gpu, c.w), E.gpu->free(E.gpu, c.b), E.gpu->free(E.gpu, c.y);
  E.gpu->free(E.gpu, c.gu);
  E.gpu->trim(E.gpu);
  free(y), free(z);
}

static void test_bench(void **s) {
  (void)s;
  const char *e = getenv("QVL_GEMM_SWIGLU_BENCH");
  if (!e || !*e || *e == '0') {
    printf("  timing skipped (set QVL_GEMM_SWIGLU_BENCH=1)\n");
    skip();
  }
  printf("  device %s, %s\n", E.gpu->device, E.clusters ? "clusters of 2 run" : "no clusters of 2");
  bench_shape(65536, 6912, 1280, 1, "Qwen2.5-VL tower, 64 images");
  bench_shape(11264, 6912, 1280, 1, "Qwen2.5-VL tower, 11 images");
  bench_shape(1735, 37888, 3584, 0, "language model prefill");
  bench_shape(4096, 37888, 3584, 0, "language model prefill");
}

static int setup(void **s) {
  (void)s;
  E.rng = tu_seed();
  return tu_backend_pair(&E.cpu, &E.gpu, &E.err);
}

static int teardown(void **s) {
  (void)s;
  tu_backend_pair_free(E.cpu, E.gpu);
  return 0;
}

static const int CLUSTER2 = 2;

int main(void) {
  if (qvl_cuda_device_count() == 0) {
    printf("test_gpu_gemm_swiglu: no CUDA device here; skipped\n");
    return 0;
  }
  const struct CMUnitTest all[] = {
    cmocka_unit_test(test_silu_all_bf16),
    cmocka_unit_test(test_shapes),
    cmocka_unit_test(test_persistent),
    cmocka_unit_test(test_graph),
    cmocka_unit_test(test_refusals),
    cmocka_unit_test(test_gate_up),
    cmocka_unit_test_prestate(test_silu_all_bf16, (void *)&CLUSTER2),
    cmocka_unit_test_prestate(test_shapes, (void *)&CLUSTER2),
    cmocka_unit_test_prestate(test_persistent, (void *)&CLUSTER2),
    cmocka_unit_test(test_bench),
  };
  const struct CMUnitTest refusals_only[] = {cmocka_unit_test(test_refusals)};
  int rc = cuda_linear_swiglu_init();
  if (rc == QVL_ERR_UNSUPPORTED) {
    int dev = 0, major = 0, minor = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    printf("test_gpu_gemm_swiglu: compute capability %d.%d (the kernel is sm_90a only), or no sm_90a image, or no "
           "cuTensorMapEncodeTiled: the kernel cases are skipped, the refusals run\n",
           major, minor);
    return cmocka_run_group_tests(refusals_only, setup, teardown);
  }
  if (rc != QVL_OK) {
    printf("test_gpu_gemm_swiglu: cuda_linear_swiglu_init failed (%d)\n", rc);
    return 1;
  }
  /* the cluster variant's launcher answers before launching anything (m = 0) */
  void *d = NULL;
  if (cudaMalloc(&d, 4096) != cudaSuccess) return 1;
  E.clusters = cuda_linear_swiglu_debug(2, d, d, d, NULL, 0, 128, 64, NULL) == QVL_OK;
  cudaFree(d);
  printf("test_gpu_gemm_swiglu: the cluster-of-2 variant %s\n", E.clusters ? "runs here" : "does not run here");
  return cmocka_run_group_tests(all, setup, teardown);
}
