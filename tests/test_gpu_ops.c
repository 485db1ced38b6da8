/* Every CUDA backend op against the CPU reference op on the same bf16-representable inputs, drawn fresh
 * each run (QVL_TEST_SEED to replay). Outputs are poisoned with NaN first. Reports rel_l2 and max_abs per op;
 * the bars are bf16 tolerances (~1e-2 relative). Skips, saying why, without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_ops.h"
#include "core/half.h"
#include "testutil.h"

typedef struct env {
  qvl_backend *cpu, *gpu;
  qvl_err err;
  uint64_t rng;
} env;

static env E;

/* A host array of n bf16-representable floats in [lo, hi). */
static float *rnd(size_t n, float lo, float hi) {
  float *p = malloc(n * sizeof(float));
  tu_uniform(p, n, lo, hi, &E.rng);
  for (size_t i = 0; i < n; i++) p[i] = qvl_bf16_to_f32(qvl_f32_to_bf16(p[i]));
  return p;
}

/* Device copy (bf16) of host floats. */
static void *dev(const float *h, size_t n) {
  void *d;
  assert_int_equal(E.gpu->alloc(E.gpu, &d, n * 2), QVL_OK);
  assert_int_equal(E.gpu->upload_f32(E.gpu, d, h, (int64_t)n), QVL_OK);
  return d;
}

static void *dev_poisoned(size_t n) {
  float *nan = malloc(n * sizeof(float));
  tu_poison(nan, n);
  void *d = dev(nan, n);
  free(nan);
  return d;
}

static void *dev_raw(const void *h, size_t bytes) {
  void *d;
  assert_int_equal(E.gpu->alloc(E.gpu, &d, bytes), QVL_OK);
  assert_int_equal(E.gpu->upload(E.gpu, d, h, bytes), QVL_OK);
  return d;
}

static void compare(const char *op, const void *d, const float *ref, size_t n, double tol) {
  float *got = malloc(n * sizeof(float));
  assert_int_equal(E.gpu->download_f32(E.gpu, got, d, (int64_t)n), QVL_OK);
  double rel = tu_rel_l2(got, ref, n);
  printf("  %-28s rel_l2 %.2e  max_abs %.2e\n", op, rel, tu_max_abs_diff(got, ref, n));
  if (!(rel <= tol)) fail_msg("%s: rel_l2 %.3e > %.1e", op, rel, tol);
  free(got);
}

static void linear_case(int64_t m, int n, int k, int bias, int epi) {
  float *x = rnd((size_t)(m * k), -2, 2), *w = rnd((size_t)n * k, -0.05f, 0.05f), *b = rnd((size_t)n, -0.5f, 0.5f);
  float *ref = rnd((size_t)(m * n), -1, 1); /* the residual for QVL_EPI_RESIDUAL */
  void *dx = dev(x, (size_t)(m * k)), *dw = dev(w, (size_t)n * k), *db = dev(b, (size_t)n);
  void *dy = epi == QVL_EPI_RESIDUAL ? dev(ref, (size_t)(m * n)) : dev_poisoned((size_t)(m * n));
  assert_int_equal(E.cpu->linear(E.cpu, ref, x, w, bias ? b : NULL, m, n, k, epi), QVL_OK);
  assert_int_equal(E.gpu->linear(E.gpu, dy, dx, dw, bias ? db : NULL, m, n, k, epi), QVL_OK);
  char name[64];
  static const char *epis[] = {"", " gelu_tanh", " +=residual"};
  snprintf(name, sizeof name, "linear %lldx%dx%d%s%s", (long long)m, n, k, bias ? "+bias" : "", epis[epi]);
  compare(name, dy, ref, (size_t)(m * n), 8e-3);
  E.gpu->free(E.gpu, dx), E.gpu->free(E.gpu, dw), E.gpu->free(E.gpu, db), E.gpu->free(E.gpu, dy);
  free(x), free(w), free(b), free(ref);
}

static void test_linear(void **s) {
  (void)s;
  linear_case(1037, 3840, 1280, 1, QVL_EPI_NONE);
  linear_case(513, 3420, 1280, 1, QVL_EPI_NONE); /* Qwen2.5-VL MLP width, unpadded */
  linear_case(300, 1280, 3420, 0, QVL_EPI_NONE);
  linear_case(256, 1152, 1536, 1, QVL_EPI_NONE); /* Qwen3-VL patch embed */
  linear_case(7, 96, 256, 1, QVL_EPI_NONE);
  linear_case(999, 4352, 1152, 1, QVL_EPI_GELU_TANH); /* Qwen3-VL fc1, padded width */
  linear_case(999, 1152, 4352, 1, QVL_EPI_RESIDUAL);
  linear_case(64, 1280, 1280, 1, QVL_EPI_RESIDUAL);
  /* m >= 1024, and m <= 16 with the GEMV kernel among the candidates: the first call of a shape times the
   * candidates (a residual one into a temporary, so y keeps its residual); the second runs the one kept */
  for (int i = 0; i < 2; i++) {
    linear_case(2048, 1152, 4352, 1, QVL_EPI_RESIDUAL);
    linear_case(1536, 4352, 1152, 1, QVL_EPI_GELU_TANH);
    linear_case(1, 3590, 3584, 1, QVL_EPI_RESIDUAL);
    linear_case(5, 4608, 3584, 1, QVL_EPI_NONE);
    linear_case(16, 1000, 1000, 0, QVL_EPI_GELU_TANH);
  }
  /* other row counts of the same quarter-octave buckets: the plans above, their layouts set to these rows (and back) */
  linear_case(2100, 1152, 4352, 1, QVL_EPI_RESIDUAL);
  linear_case(2400, 1152, 4352, 1, QVL_EPI_RESIDUAL);
  linear_case(2048, 1152, 4352, 1, QVL_EPI_RESIDUAL);
  linear_case(1700, 4352, 1152, 1, QVL_EPI_GELU_TANH);
  linear_case(1030, 3840, 1280, 1, QVL_EPI_NONE);
}

/* QVL_GEMM_SEARCH=1: shapes of 1024 rows or more (and fewer than the 64 GFLOP that search by default) also time
 * cuBLASLt configurations outside the heuristic's 8 (gemm.c's tune_rows), a residual one into a temporary; the kept
 * one, whichever it is, matches the CPU on the first call and on the next; other row buckets of the same shapes time
 * the first search's best again (no second search) and match too. Shapes no other test uses. */
static void test_linear_search(void **s) {
  (void)s;
  assert_int_equal(setenv("QVL_GEMM_SEARCH", "1", 1), 0);
  for (int i = 0; i < 2; i++) {
    linear_case(1200, 1088, 704, 1, QVL_EPI_NONE);
    linear_case(1100, 704, 1088, 1, QVL_EPI_RESIDUAL);
    linear_case(1300, 960, 512, 1, QVL_EPI_GELU_TANH);
  }
  linear_case(2500, 1088, 704, 1, QVL_EPI_NONE);
  linear_case(1700, 704, 1088, 1, QVL_EPI_RESIDUAL);
  unsetenv("QVL_GEMM_SEARCH");
}

/* linear_record / linear_tune: two shapes recorded at 64 and 16 rows, tuned for 1 .. 4096 rows, make a choice for
 * every key they would meet (m = 1 .. 16 exactly, quarter octaves from 1024 rows: 1024, 1218, ..., 4096), the second
 * scaled to a quarter of the rows, less the keys their recorded calls made; then calls in tuned buckets still match
 * the CPU, and a second tuning finds nothing new. */
static void test_linear_tune(void **s) {
  (void)s;
  const int n = 640, k = 384; /* shapes no other test uses */
  float *x = rnd((size_t)4096 * k, -2, 2), *w = rnd((size_t)n * k, -0.05f, 0.05f), *b = rnd((size_t)n, -0.5f, 0.5f);
  float *ref = rnd((size_t)4096 * n, -1, 1);
  void *dx = dev(x, (size_t)4096 * k), *dw = dev(w, (size_t)n * k), *db = dev(b, (size_t)n);
  void *dy = dev_poisoned((size_t)4096 * n);
  int tuned = -1;
  assert_int_equal(E.gpu->linear_record(E.gpu), QVL_OK);
  assert_int_equal(E.gpu->linear(E.gpu, dy, dx, dw, db, 64, n, k, QVL_EPI_NONE), QVL_OK);
  assert_int_equal(E.gpu->linear(E.gpu, dy, dx, dw, NULL, 16, k, n, QVL_EPI_RESIDUAL), QVL_OK); /* [k x n] */
  assert_int_equal(E.gpu->linear_tune(E.gpu, 1, 4096, &tuned), QVL_OK);
  assert_int_equal(tuned, (16 + 9) + (15 + 1));
  assert_int_equal(E.gpu->linear_record(E.gpu), QVL_OK);
  assert_int_equal(E.gpu->linear(E.gpu, dy, dx, dw, db, 64, n, k, QVL_EPI_NONE), QVL_OK);
  assert_int_equal(E.gpu->linear_tune(E.gpu, 1, 4096, &tuned), QVL_OK);
  assert_int_equal(tuned, 0);
  static const int64_t ms[] = {3, 1100, 2900, 4096};
  for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) {
    int64_t m = ms[i];
    E.gpu->free(E.gpu, dy);
    dy = dev_poisoned((size_t)m * n);
    assert_int_equal(E.cpu->linear(E.cpu, ref, x, w, b, m, n, k, QVL_EPI_NONE), QVL_OK);
    assert_int_equal(E.gpu->linear(E.gpu, dy, dx, dw, db, m, n, k, QVL_EPI_NONE), QVL_OK);
    char name[64];
    snprintf(name, sizeof name, "tuned linear %lldx%dx%d+bias", (long long)m, n, k);
    compare(name, dy, ref, (size_t)m * n, 8e-3);
  }
  E.gpu->free(E.gpu, dx), E.gpu->free(E.gpu, dw), E.gpu->free(E.gpu, db), E.gpu->free(E.gpu, dy);
  free(x), free(w), free(b), free(ref);
}

/* y [m][n] from gemv.cu's kernel alone (whatever cuda_linear would pick), on the backend's stream. */
static void *gemv_run(const float *x, const float *w, const float *b, const float *y0, int m, int n, int k, int epi) {
  void *dx = dev(x, (size_t)m * k), *dw = dev(w, (size_t)n * k), *db = b ? dev(b, (size_t)n) : NULL;
  void *dy = epi == QVL_EPI_RESIDUAL ? dev(y0, (size_t)m * n) : dev_poisoned((size_t)m * n);
  assert_int_equal(cuda_gemv(dy, dx, dw, db, epi == QVL_EPI_RESIDUAL ? dy : NULL, m, n, k, epi == QVL_EPI_GELU_TANH,
                             ((cuda_ctx *)E.gpu->ctx)->stream),
                   QVL_OK);
  E.gpu->free(E.gpu, dx), E.gpu->free(E.gpu, dw), E.gpu->free(E.gpu, db);
  return dy;
}

/* The decode GEMV against the CPU for m = 1 .. 16 (one and two mma column tiles), n off the 16-row tiles, k off the
 * 32-column chunks, every epilogue, bias on and off; then row 0 of m = 16 equals m = 1 bit for bit (each output
 * depends on its own x row only), and the shapes it refuses. */
static void test_gemv(void **s) {
  (void)s;
  static const struct {
    int n, k, bias, epi;
  } sh[] = {{77, 264, 1, QVL_EPI_NONE},         {1000, 1000, 0, QVL_EPI_GELU_TANH}, {3590, 3584, 1, QVL_EPI_RESIDUAL},
            {4608, 3584, 1, QVL_EPI_NONE},      {517, 18944, 0, QVL_EPI_RESIDUAL},  {1, 4104, 1, QVL_EPI_GELU_TANH},
            {2000, 1152, 1, QVL_EPI_GELU_TANH}, {333, 2056, 0, QVL_EPI_NONE}};
  static const int ms[] = {1, 2, 3, 5, 8, 9, 12, 16};
  static const char *epis[] = {"", " gelu_tanh", " +=residual"};
  for (size_t i = 0; i < sizeof sh / sizeof *sh; i++)
    for (size_t j = 0; j < sizeof ms / sizeof *ms; j++) {
      int m = ms[j], n = sh[i].n, k = sh[i].k, epi = sh[i].epi;
      float *x = rnd((size_t)m * k, -2, 2), *w = rnd((size_t)n * k, -0.05f, 0.05f), *b = rnd((size_t)n, -0.5f, 0.5f);
      float *ref = rnd((size_t)m * n, -1, 1); /* the residual for QVL_EPI_RESIDUAL */
      void *dy = gemv_run(x, w, sh[i].bias ? b : NULL, ref, m, n, k, epi);
      assert_int_equal(E.cpu->linear(E.cpu, ref, x, w, sh[i].bias ? b : NULL, m, n, k, epi), QVL_OK);
      char name[64];
      snprintf(name, sizeof name, "gemv %dx%dx%d%s%s", m, n, k, sh[i].bias ? "+bias" : "", epis[epi]);
      compare(name, dy, ref, (size_t)m * n, 8e-3);
      E.gpu->free(E.gpu, dy);
      free(x), free(w), free(b), free(ref);
    }
  const int n = 4608, k = 3584;
  float *x = rnd((size_t)16 * k, -2, 2), *w = rnd((size_t)n * k, -0.05f, 0.05f), *b = rnd((size_t)n, -0.5f, 0.5f);
  float *y16 = malloc((size_t)16 * n * sizeof(float)), *y1 = malloc((size_t)n * sizeof(float));
  void *d16 = gemv_run(x, w, b, NULL, 16, n, k, QVL_EPI_NONE), *d1 = gemv_run(x, w, b, NULL, 1, n, k, QVL_EPI_NONE);
  assert_int_equal(E.gpu->download_f32(E.gpu, y16, d16, (int64_t)16 * n), QVL_OK);
  assert_int_equal(E.gpu->download_f32(E.gpu, y1, d1, n), QVL_OK);
  assert_memory_equal(y1, y16, (size_t)n * sizeof(float));
  qvl_stream st = ((cuda_ctx *)E.gpu->ctx)->stream;
  assert_int_equal(cuda_gemv(d16, d1, d16, NULL, NULL, 17, n, k, 0, st), QVL_ERR_UNSUPPORTED);
  assert_int_equal(cuda_gemv(d16, d1, d16, NULL, NULL, 1, n, 3420, 0, st), QVL_ERR_UNSUPPORTED);
  assert_int_equal(cuda_gemv(d16, (uint16_t *)d1 + 4, d16, NULL, NULL, 1, n, k, 0, st), QVL_ERR_UNSUPPORTED);
  E.gpu->free(E.gpu, d16), E.gpu->free(E.gpu, d1);
  free(x), free(w), free(b), free(y16), free(y1);
}

static void test_norms(void **s) {
  (void)s;
  const int64_t rows = 777;
  const int dims[] = {1280, 1152, 4608, 64, 3584, 4096}; /* 4608: past the register-held rows (4,096) */
  for (int i = 0; i < 6; i++) {
    int d = dims[i];
    float *x = rnd((size_t)(rows * d), -3, 3), *w = rnd((size_t)d, 0.5f, 1.5f), *b = rnd((size_t)d, -0.2f, 0.2f);
    float *ref = malloc((size_t)(rows * d) * sizeof(float));
    void *dx = dev(x, (size_t)(rows * d)), *dw = dev(w, (size_t)d), *db = dev(b, (size_t)d);
    void *dy = dev_poisoned((size_t)(rows * d));
    char name[64];
    assert_int_equal(E.cpu->rmsnorm(E.cpu, ref, x, w, rows, d, 1e-6f), QVL_OK);
    assert_int_equal(E.gpu->rmsnorm(E.gpu, dy, dx, dw, rows, d, 1e-6f), QVL_OK);
    snprintf(name, sizeof name, "rmsnorm dim %d", d);
    compare(name, dy, ref, (size_t)(rows * d), 8e-3);
    assert_int_equal(E.cpu->layernorm(E.cpu, ref, x, w, b, rows, d, 1e-6f), QVL_OK);
    assert_int_equal(E.gpu->layernorm(E.gpu, dy, dx, dw, db, rows, d, 1e-6f), QVL_OK);
    snprintf(name, sizeof name, "layernorm dim %d", d);
    compare(name, dy, ref, (size_t)(rows * d), 8e-3);
    E.gpu->free(E.gpu, dx), E.gpu->free(E.gpu, dw), E.gpu->free(E.gpu, db), E.gpu->free(E.gpu, dy);
    free(x), free(w), free(b), free(ref);
  }
}

static void test_eltwise(void **s) {
  (void)s;
  const size_t n = 1 << 20 | 37;
  float *a = rnd(n, -4, 4), *b = rnd(n, -4, 4), *ref = malloc(n * sizeof(float));
  void *da = dev(a, n), *db = dev(b, n), *dy = dev_poisoned(n);
  memcpy(ref, a, n * sizeof(float));
  assert_int_equal(E.cpu->add(E.cpu, ref, b, (int64_t)n), QVL_OK);
  assert_int_equal(E.gpu->add(E.gpu, da, db, (int64_t)n), QVL_OK); /* da += db */
  compare("add", da, ref, n, 8e-3);
  assert_int_equal(E.cpu->silu_mul(E.cpu, ref, a, b, (int64_t)n), QVL_OK);
  E.gpu->free(E.gpu, da), da = dev(a, n);
  assert_int_equal(E.gpu->silu_mul(E.gpu, dy, da, db, (int64_t)n), QVL_OK);
  compare("silu_mul", dy, ref, n, 8e-3);
  /* swiglu over [rows][2f] (gate | up halves): f = 3456 (16-byte path) and f = 37 (scalar path) */
  int fs[] = {3456, 37};
  for (int i = 0; i < 2; i++) {
    int64_t f = fs[i], rows = (int64_t)(n / (size_t)(2 * f));
    E.gpu->free(E.gpu, dy), dy = dev_poisoned((size_t)(rows * f));
    assert_int_equal(E.cpu->swiglu(E.cpu, ref, a, rows, (int)f), QVL_OK);
    assert_int_equal(E.gpu->swiglu(E.gpu, dy, da, rows, (int)f), QVL_OK);
    compare(i ? "swiglu f 37" : "swiglu f 3456", dy, ref, (size_t)(rows * f), 8e-3);
  }
  E.gpu->free(E.gpu, dy), dy = dev_poisoned(n);
  assert_int_equal(E.cpu->gelu_erf(E.cpu, ref, a, (int64_t)n), QVL_OK);
  assert_int_equal(E.gpu->gelu_erf(E.gpu, dy, da, (int64_t)n), QVL_OK);
  compare("gelu_erf", dy, ref, n, 8e-3);
  assert_int_equal(E.cpu->gelu_tanh(E.cpu, ref, a, (int64_t)n), QVL_OK);
  assert_int_equal(E.gpu->gelu_tanh(E.gpu, dy, da, (int64_t)n), QVL_OK);
  compare("gelu_tanh", dy, ref, n, 8e-3);
  E.gpu->free(E.gpu, da), E.gpu->free(E.gpu, db), E.gpu->free(E.gpu, dy);
  free(a), free(b), free(ref);
}

/* cos/sin [rows][hd] of random angles, one per element (the ops may not assume the towers' concat(a, a)). */
static void rope_tables(int64_t rows, int hd, float **cs, float **sn) {
  size_t n = (size_t)(rows * hd);
  float *ang = malloc(n * sizeof(float));
  *cs = malloc(n * sizeof(float)), *sn = malloc(n * sizeof(float));
  tu_uniform(ang, n, -40, 40, &E.rng);
  for (size_t j = 0; j < n; j++) (*cs)[j] = cosf(ang[j]), (*sn)[j] = sinf(ang[j]);
  free(ang);
}

static void test_rope(void **s) {
  (void)s;
  const int64_t rows = 999;
  const int heads = 16, hds[] = {80, 72, 64};
  for (int i = 0; i < 3; i++) {
    int hd = hds[i];
    size_t n = (size_t)(rows * 3 * heads * hd);
    float *x = rnd(n, -2, 2), *cs, *sn;
    rope_tables(rows, hd, &cs, &sn);
    void *dx = dev(x, n), *dc = dev_raw(cs, (size_t)(rows * hd) * 4), *ds = dev_raw(sn, (size_t)(rows * hd) * 4);
    cudaStream_t stream = ((cuda_ctx *)E.gpu->ctx)->stream;
    /* the rotary the attention op applies (cpu_attention.c, attention.c's unfused candidates) */
    float *x0 = malloc(n * sizeof(float)), *both = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    memcpy(x0, x, n * sizeof(float));
    assert_int_equal(cpu_rope_qk(E.cpu, x, cs, sn, rows, heads, hd), QVL_OK);
    assert_int_equal(cuda_rope_qk(dx, dc, ds, rows, heads, hd, CUDA_ROPE_QK, stream), QVL_OK);
    char name[96];
    snprintf(name, sizeof name, "rope_qk head_dim %d", hd);
    compare(name, dx, x, n, 8e-3);
    /* q alone, then k alone (the attention's rope_k+wgmma and its tuning): each rotates its part as the pass over
     * both does, bit for bit, and nothing else */
    assert_int_equal(E.gpu->download_f32(E.gpu, both, dx, (int64_t)n), QVL_OK);
    assert_int_equal(E.gpu->upload_f32(E.gpu, dx, x0, (int64_t)n), QVL_OK);
    const size_t row = (size_t)3 * heads * hd, part = (size_t)heads * hd;
    for (int parts = CUDA_ROPE_Q; parts <= CUDA_ROPE_K; parts++) {
      assert_int_equal(cuda_rope_qk(dx, dc, ds, rows, heads, hd, parts, stream), QVL_OK);
      for (size_t i = 0; i < n; i++) { /* q rotated after the first pass, k too after the second */
        const size_t p = i % row / part;
        want[i] = p < 2 && (p == 0 || parts == CUDA_ROPE_K) ? both[i] : x0[i];
      }
      snprintf(name, sizeof name, "rope_qk head_dim %d, %s", hd, parts == CUDA_ROPE_Q ? "q alone" : "then k alone");
      compare(name, dx, want, n, 0);
    }
    assert_int_equal(cuda_rope_qk(dx, dc, ds, rows, heads, hd, 0, stream), QVL_ERR_INVALID_ARG);
    E.gpu->free(E.gpu, dx), E.gpu->free(E.gpu, dc), E.gpu->free(E.gpu, ds);
    free(x), free(x0), free(both), free(want), free(cs), free(sn);
  }
}

/* The CPU reference (f32 rope_qk when rotary, then attention) against the CUDA op, run three ways: the first run
 * (which times the candidate kernels and keeps the fastest), a second run of the chosen one, and a replay of it
 * captured in a graph. Before each, qkv is uploaded again (an unfused candidate rotates q and k in place) and the
 * output poisoned. */
static void attention_case(const char *what, const int32_t *lens, int n_seq, int heads, int hd, int rotary) {
  int32_t *cu = malloc((size_t)(n_seq + 1) * sizeof(int32_t));
  cu[0] = 0;
  for (int i = 0; i < n_seq; i++) cu[i + 1] = cu[i] + lens[i];
  int64_t rows = cu[n_seq];
  size_t nq = (size_t)(rows * 3 * heads * hd), no = (size_t)(rows * heads * hd), nt = (size_t)(rows * hd);
  float *qkv = rnd(nq, -2, 2), *x = malloc(nq * sizeof(float)), *ref = malloc(no * sizeof(float));
  float *nan = malloc(no * sizeof(float)), *cs = NULL, *sn = NULL;
  float scale = 1.0f / sqrtf((float)hd);
  void *catt = NULL, *gatt = NULL, *graph = NULL, *dc = NULL, *ds = NULL;
  if (rotary) {
    rope_tables(rows, hd, &cs, &sn);
    dc = dev_raw(cs, nt * 4), ds = dev_raw(sn, nt * 4);
  }
  memcpy(x, qkv, nq * sizeof(float)); /* the CPU op rotates its input in place */
  assert_int_equal(E.cpu->attention_prepare(E.cpu, &catt, cu, cu, n_seq, heads, hd), QVL_OK);
  assert_int_equal(E.cpu->attention(E.cpu, ref, x, catt, cs, sn, scale), QVL_OK);
  void *dq = dev(qkv, nq), *dout = dev_poisoned(no), *dcu = dev_raw(cu, (size_t)(n_seq + 1) * 4);
  if (E.gpu->attention_prepare(E.gpu, &gatt, cu, dcu, n_seq, heads, hd)) fail_msg("%s", E.err.msg);
  tu_poison(nan, no);
  const char *how[] = {"tuned", "again", "graph"};
  for (int run = 0; run < 3; run++) {
    assert_int_equal(E.gpu->upload_f32(E.gpu, dq, qkv, (int64_t)nq), QVL_OK);
    assert_int_equal(E.gpu->upload_f32(E.gpu, dout, nan, (int64_t)no), QVL_OK);
    if (run < 2 && E.gpu->attention(E.gpu, dout, dq, gatt, dc, ds, scale)) fail_msg("%s", E.err.msg);
    if (run == 2) {
      assert_int_equal(E.gpu->graph_begin(E.gpu), QVL_OK);
      int rc = E.gpu->attention(E.gpu, dout, dq, gatt, dc, ds, scale), end = E.gpu->graph_end(E.gpu, &graph);
      if (rc || end || E.gpu->graph_launch(E.gpu, graph)) fail_msg("%s", E.err.msg);
    }
    char name[96];
    snprintf(name, sizeof name, "attention %s d%d%s %s", what, hd, rotary ? " rotary" : "", how[run]);
    compare(name, dout, ref, no, 1e-2);
  }
  E.gpu->graph_free(E.gpu, graph);
  E.gpu->attention_free(E.gpu, gatt), E.cpu->attention_free(E.cpu, catt);
  E.gpu->free(E.gpu, dq), E.gpu->free(E.gpu, dout), E.gpu->free(E.gpu, dcu), E.gpu->free(E.gpu, dc);
  E.gpu->free(E.gpu, ds);
  free(cu), free(qkv), free(x), free(ref), free(nan), free(cs), free(sn);
}

static void test_attention(void **s) {
  (void)s;
  int32_t mixed[] = {300, 1, 1024, 77, 513};
  int32_t windows[200], full[300];
  for (int i = 0; i < 200; i++) windows[i] = i % 7 ? 64 : 16 + i % 48;
  for (int i = 0; i < 300; i++) full[i] = 64; /* whole windows: the dense batched path */
  int hds[] = {80, 72, 64, 16};
  for (int i = 0; i < 4; i++)
    for (int rotary = 0; rotary < 2; rotary++) { /* with the rotary: every layout at the towers' head dims */
      attention_case("ragged 5 seqs", mixed, 5, 16, hds[i], rotary);
      attention_case("200 windows", windows, 200, 4, hds[i], rotary);
      if (rotary && i >= 2) continue;
      attention_case("300 full windows", full, 300, 16, hds[i], rotary);
      attention_case("3 equal images", (const int32_t[]){1024, 1024, 1024}, 3, 16, hds[i], rotary);
    }
}

static void test_gather(void **s) {
  (void)s;
  const int64_t n = 1000, cols = 4 * 64;
  float *x = rnd((size_t)(n * cols), -1, 1), *ref = malloc((size_t)(n * cols) * sizeof(float));
  int32_t *idx = malloc((size_t)n * sizeof(int32_t));
  for (int64_t i = 0; i < n; i++) idx[i] = (int32_t)((i * 7919) % n);
  void *dx = dev(x, (size_t)(n * cols)), *dy = dev_poisoned((size_t)(n * cols)), *di = dev_raw(idx, (size_t)n * 4);
  assert_int_equal(E.cpu->gather_rows(E.cpu, ref, x, idx, n, cols), QVL_OK);
  assert_int_equal(E.gpu->gather_rows(E.gpu, dy, dx, di, n, cols), QVL_OK);
  compare("gather_rows", dy, ref, (size_t)(n * cols), 0);
  /* bilinear position embedding add */
  const int side = 48, dim = 1152;
  const int64_t rows = 640;
  float *table = rnd((size_t)side * side * dim, -0.1f, 0.1f), *h = rnd((size_t)(rows * dim), -1, 1);
  float *w = malloc((size_t)rows * 4 * sizeof(float));
  int32_t *bi = malloc((size_t)rows * 4 * sizeof(int32_t));
  tu_uniform(w, (size_t)rows * 4, 0, 1, &E.rng);
  for (int64_t i = 0; i < rows * 4; i++) bi[i] = (int32_t)((i * 104729) % (side * side));
  void *dt = dev(table, (size_t)side * side * dim), *dh = dev(h, (size_t)(rows * dim));
  void *dw = dev_raw(w, (size_t)rows * 16), *dbi = dev_raw(bi, (size_t)rows * 16);
  assert_int_equal(E.cpu->add_bilinear(E.cpu, h, table, bi, w, rows, dim), QVL_OK);
  assert_int_equal(E.gpu->add_bilinear(E.gpu, dh, dt, dbi, dw, rows, dim), QVL_OK);
  compare("add_bilinear", dh, h, (size_t)(rows * dim), 8e-3);
  void *all[] = {dx, dy, di, dt, dh, dw, dbi};
  for (int i = 0; i < 7; i++) E.gpu->free(E.gpu, all[i]);
  free(x), free(ref), free(idx), free(table), free(h), free(w), free(bi);
}

/* Row scatter (vision rows and DeepStack into the language model's rows), plain and accumulating. */
static void test_lm_ops(void **s) {
  (void)s;
  const int64_t rows = 77;
  const int heads = 8, hd = 128;
  size_t nq = (size_t)(rows * heads * hd);
  float *k = rnd((size_t)5 * heads * hd, -2, 2), *ref = malloc(nq * sizeof(float));
  int32_t idx[5] = {3, 70, 11, 0, 42};
  float *y0 = rnd(nq, -1, 1);
  void *di = dev_raw(idx, sizeof idx), *dy = dev(y0, nq), *dx = dev(k, (size_t)5 * heads * hd);
  for (int acc = 0; acc < 2; acc++) {
    memcpy(ref, y0, nq * sizeof(float));
    E.gpu->free(E.gpu, dy), dy = dev(y0, nq);
    assert_int_equal(E.cpu->scatter_rows(E.cpu, ref, k, idx, 5, heads * hd, acc), QVL_OK);
    assert_int_equal(E.gpu->scatter_rows(E.gpu, dy, dx, di, 5, heads * hd, acc), QVL_OK);
    compare(acc ? "scatter_rows +=" : "scatter_rows", dy, ref, nq, acc ? 8e-3 : 0);
  }
  E.gpu->free(E.gpu, di), E.gpu->free(E.gpu, dy), E.gpu->free(E.gpu, dx);
  free(k), free(ref), free(y0);
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

int main(void) {
  if (qvl_cuda_device_count() == 0) {
    printf("test_gpu_ops: no CUDA device here; skipped\n");
    return 0;
  }
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_linear), cmocka_unit_test(test_linear_search),
                                     cmocka_unit_test(test_linear_tune), cmocka_unit_test(test_gemv),
                                     cmocka_unit_test(test_norms),  cmocka_unit_test(test_eltwise),
                                     cmocka_unit_test(test_rope),   cmocka_unit_test(test_attention),
                                     cmocka_unit_test(test_gather), cmocka_unit_test(test_lm_ops)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
