/* gemm_wgmma.cu's plain epilogues (CUDA_WG_NONE, CUDA_WG_GELU_TANH, CUDA_WG_RESIDUAL: backend.h linear's candidate
 * on Hopper) against a host reference on the same bf16 inputs, drawn fresh each run (QVL_TEST_SEED replays): a =
 * bf16(sum in double rounded to f32, + bias in f32), then bf16(gelu_tanh(a)) or bf16(a + res). The kernel's f32 sums
 * run in another order, so an output may sit one bf16 ulp away where a lies next to a rounding boundary: relative L2
 * <= 4e-3 and at most 1 in 1,000 outputs more than 1 ulp apart (GELU: 2 ulps). Every output must be written (y is
 * NaN first; RESIDUAL: y holds the residual first, so NaN would be its own failure) and rows past m untouched.
 *   shapes: n a multiple of 256 and not (the last tile's columns past n never stored, its weight rows read as
 *     zeros), m 1 .. 4,097, k 64 .. 1,152, with and without bias; persistent: several tiles per CTA, CPU rows sampled.
 *   linear: the backend's tuned linear at 8,192 rows times the kernel among cuBLASLt's algorithms and is as close to
 *     the reference whichever wins; QVL_GEMM_WGMMA=0 (read at backend creation) leaves it out.
 *   rope: CUDA_WG_ROPE (backend.h linear_rope) on pair-ordered weights against linear + rope_qk on the natural ones
 *     and against the host; linear_rope's rows-0 question.
 *   graph: one captured launch replayed on new x gives the eager launch's bits.
 *   refusals: n % 64, k % 64, misalignment, residual NULL: nothing launched, y untouched.
 * Skips, saying why, without a GPU or compute capability 9.0 (refusals only there).
 *
 * QVL_GEMM_WGMMA_BENCH=1 also times (3 warm-ups, median of 25, CUDA events) the kernel against cuBLASLt tuned the
 * backend's way (a second backend made with QVL_GEMM_WGMMA=0) at the Qwen3-VL-8B tower's shapes for 64 images of
 * 512x512 (65,536 rows: qkv, proj + residual, fc1 + GELU, fc2 + residual) and Qwen2.5-VL-7B's qkv and down. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_ops.h"
#include "core/half.h"
#include "testutil.h"

enum { GUARD = 2 };
static const uint16_t POISON = 0xffff; /* NaN */

static struct {
  qvl_backend *gpu;
  qvl_err err;
  uint64_t rng;
} E;

static cudaStream_t stream(void) { return ((cuda_ctx *)E.gpu->ctx)->stream; }

static uint16_t *rnd_bf16(size_t n, float lo, float hi) {
  float *f = malloc(n * sizeof(float));
  uint16_t *h = malloc(n * 2);
  tu_uniform(f, n, lo, hi, &E.rng);
  for (size_t i = 0; i < n; i++) h[i] = qvl_f32_to_bf16(f[i]);
  free(f);
  return h;
}

static void *dev_bytes(const void *h, size_t bytes) {
  void *d;
  assert_int_equal(E.gpu->alloc(E.gpu, &d, bytes), QVL_OK);
  if (h) assert_int_equal(E.gpu->upload(E.gpu, d, h, bytes), QVL_OK);
  return d;
}

static uint16_t *download(const void *d, size_t n) {
  uint16_t *h = malloc(n * 2);
  assert_int_equal(E.gpu->download(E.gpu, h, d, n * 2), QVL_OK);
  return h;
}

static int ulps(uint16_t a, uint16_t b) {
  int ka = (a & 0x8000) ? -(int)(a & 0x7fff) : (int)a, kb = (b & 0x8000) ? -(int)(b & 0x7fff) : (int)b;
  return abs(ka - kb);
}

static const char *epi_name(int epi) {
  return epi == CUDA_WG_GELU_TANH ? "gelu_tanh"
         : epi == CUDA_WG_RESIDUAL ? "residual"
         : epi == CUDA_WG_ROPE     ? "rope"
                                   : "none";
}

/* ---- one problem ---------------------------------------------------------------------------------------------- */

typedef struct problem {
  int64_t m;
  int n, k, bias, epi;
  uint16_t *x, *w, *b, *res; /* host bf16; res [m][n] (RESIDUAL) */
  void *dx, *dw, *db;
} problem;

static void problem_make(problem *p, int epi, int64_t m, int n, int k, int bias) {
  memset(p, 0, sizeof *p);
  p->m = m, p->n = n, p->k = k, p->bias = bias, p->epi = epi;
  p->x = rnd_bf16((size_t)m * k, -2, 2), p->w = rnd_bf16((size_t)n * k, -0.05f, 0.05f);
  p->b = rnd_bf16((size_t)n, -0.5f, 0.5f);
  p->res = rnd_bf16((size_t)m * n, -3, 3);
  p->dx = dev_bytes(p->x, (size_t)m * k * 2), p->dw = dev_bytes(p->w, (size_t)n * k * 2);
  p->db = dev_bytes(p->b, (size_t)n * 2);
}

static void problem_free(problem *p) {
  E.gpu->free(E.gpu, p->dx), E.gpu->free(E.gpu, p->dw), E.gpu->free(E.gpu, p->db);
  free(p->x), free(p->w), free(p->b), free(p->res);
}

/* y [m + GUARD][n] on the device: the residual (RESIDUAL) or NaN in rows < m, NaN in the guard rows. */
static void *dev_y(const problem *p) {
  size_t n = (size_t)(p->m + GUARD) * p->n;
  uint16_t *h = malloc(n * 2);
  for (size_t i = 0; i < n; i++) h[i] = POISON;
  if (p->epi == CUDA_WG_RESIDUAL) memcpy(h, p->res, (size_t)p->m * p->n * 2);
  void *d = dev_bytes(h, n * 2);
  free(h);
  return d;
}

/* The reference output of row r, column j. */
static uint16_t ref_at(const problem *p, int64_t r, int j) {
  double s = 0;
  for (int c = 0; c < p->k; c++)
    s += (double)qvl_bf16_to_f32(p->x[r * p->k + c]) * (double)qvl_bf16_to_f32(p->w[(int64_t)j * p->k + c]);
  float a = (float)s;
  if (p->bias) a += qvl_bf16_to_f32(p->b[j]);
  a = qvl_bf16_to_f32(qvl_f32_to_bf16(a));
  if (p->epi == CUDA_WG_GELU_TANH) a = 0.5f * a * (1.0f + tanhf(0.7978845608028654f * (a + 0.044715f * a * a * a)));
  if (p->epi == CUDA_WG_RESIDUAL) a += qvl_bf16_to_f32(p->res[r * p->n + j]);
  return qvl_f32_to_bf16(a);
}

/* y (host, [m + GUARD][n]) against the reference on rows r % sample == 0 and the last (all with sample 0); every row
 * finite, the guard rows NaN. */
static void check(const char *name, const problem *p, const uint16_t *y, int sample, int loose) {
  size_t bad = 0, guard = 0, far = 0, same = 0, n_cmp = 0;
  for (size_t i = 0; i < (size_t)p->m * p->n; i++) bad += !isfinite(qvl_bf16_to_f32(y[i]));
  for (size_t i = (size_t)p->m * p->n; i < (size_t)(p->m + GUARD) * p->n; i++) guard += y[i] != POISON;
  if (bad || guard) fail_msg("%s: %zu outputs not finite (unwritten?), %zu guard elements changed", name, bad, guard);
  double e = 0, r2 = 0;
  int worst = 0, tol = p->epi == CUDA_WG_GELU_TANH ? 2 : 1;
  for (int64_t r = 0; r < p->m; r++) {
    if (sample && r % sample && r != p->m - 1) continue;
    for (int j = 0; j < p->n; j++) {
      const uint16_t want = ref_at(p, r, j), got = y[r * p->n + j];
      const double a = qvl_bf16_to_f32(got), b = qvl_bf16_to_f32(want);
      e += (a - b) * (a - b), r2 += b * b;
      const int u = ulps(got, want);
      far += u > tol, same += u == 0, n_cmp++;
      worst = u > worst ? u : worst;
    }
  }
  const double rel = sqrt(e / (r2 > 0 ? r2 : 1));
  printf("  %-52s rel_l2 %.2e, %.3f%% bit-equal, %zu of %zu > %d ulp (max %d)\n", name, rel,
         100.0 * (double)same / (double)n_cmp, far, n_cmp, tol, worst);
  if (loose) { /* cuBLASLt's GELU epilogue (not the tanh form to the last bit: ~1% of outputs > 2 ulps, H100) */
    if (!(rel <= 1e-2)) fail_msg("%s: rel_l2 %.3e > 1e-2", name, rel);
    return;
  }
  if (!(rel <= 4e-3)) fail_msg("%s: rel_l2 %.3e > 4e-3", name, rel);
  if (far > n_cmp / 1000) fail_msg("%s: %zu of %zu outputs more than %d ulp from the reference", name, far, n_cmp, tol);
}

static uint16_t *run_kernel(const problem *p) {
  void *y = dev_y(p);
  const void *res = p->epi == CUDA_WG_RESIDUAL ? y : NULL;
  assert_int_equal(cuda_gemm_wgmma(p->epi, y, res, p->dx, p->dw, p->bias ? p->db : NULL, p->m, p->n, p->k, stream()),
                   QVL_OK);
  uint16_t *h = download(y, (size_t)(p->m + GUARD) * p->n);
  E.gpu->free(E.gpu, y);
  return h;
}

static void case_run(int epi, int64_t m, int n, int k, int bias, int sample) {
  problem p;
  problem_make(&p, epi, m, n, k, bias);
  char name[96];
  snprintf(name, sizeof name, "%s m %lld n %d k %d%s", epi_name(epi), (long long)m, n, k, bias ? " bias" : "");
  uint16_t *y = run_kernel(&p);
  check(name, &p, y, sample, 0);
  free(y);
  problem_free(&p);
}

/* ---- tests -------------------------------------------------------------------------------------------------- */

static void test_shapes(void **s) {
  (void)s;
  static const struct { int64_t m; int n, k, sample; } C[] = {
    {1, 64, 64, 0}, {77, 256, 128, 0}, {300, 576, 192, 0}, {129, 1152, 64, 0}, {4097, 320, 1152, 17},
  };
  for (int epi = CUDA_WG_NONE; epi <= CUDA_WG_RESIDUAL; epi++)
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++)
      case_run(epi, C[i].m, C[i].n, C[i].k, (int)(i % 2 == 0), C[i].sample);
}

static void test_persistent(void **s) {
  (void)s;
  case_run(CUDA_WG_GELU_TANH, 8269, 4352, 1152, 1, 97); /* Qwen3-VL fc1: 65 x 17 tiles, ~8 per CTA */
  case_run(CUDA_WG_RESIDUAL, 5000, 1152, 4352, 1, 61);  /* fc2: a partial last tile, 68 k steps */
  case_run(CUDA_WG_NONE, 3000, 3456, 1152, 1, 59);      /* qkv */
  case_run(CUDA_WG_RESIDUAL, 2000, 4608, 3584, 0, 83);  /* w 33 MB: the banded tile order */
}

/* The backend's linear at 8,192 rows: the kernel is among the timed candidates, and the output is the reference's
 * whichever won. */
static void test_linear(void **s) {
  (void)s;
  problem p;
  problem_make(&p, CUDA_WG_GELU_TANH, 8192, 4352, 1152, 1);
  void *y = dev_y(&p);
  assert_int_equal(E.gpu->linear(E.gpu, y, p.dx, p.dw, p.db, p.m, p.n, p.k, QVL_EPI_GELU_TANH), QVL_OK);
  const cuda_ctx *c = E.gpu->ctx;
  const gemm_entry *g = NULL;
  for (int i = 0; i < c->n_gemms; i++)
    if (c->gemms[i].n == p.n && c->gemms[i].k == p.k && c->gemms[i].epi == QVL_EPI_GELU_TANH) g = &c->gemms[i];
  assert_non_null(g);
  assert_true(g->wg_ok && g->tuned);
  uint16_t *h = download(y, (size_t)(p.m + GUARD) * p.n);
  check(g->kernel == GEMM_WGMMA ? "linear (chose wgmma)" : "linear (chose cuBLASLt)", &p, h, 61,
        g->kernel != GEMM_WGMMA);
  free(h);
  E.gpu->free(E.gpu, y);
  problem_free(&p);
}

static void test_graph(void **s) {
  (void)s;
  problem p;
  problem_make(&p, CUDA_WG_RESIDUAL, 1000, 1152, 1152, 1);
  void *y = dev_y(&p), *graph = NULL;
  assert_int_equal(E.gpu->graph_begin(E.gpu), QVL_OK);
  assert_int_equal(cuda_gemm_wgmma(p.epi, y, y, p.dx, p.dw, p.db, p.m, p.n, p.k, stream()), QVL_OK);
  assert_int_equal(E.gpu->graph_end(E.gpu, &graph), QVL_OK);
  free(p.x);
  p.x = rnd_bf16((size_t)p.m * p.k, -2, 2);
  assert_int_equal(E.gpu->upload(E.gpu, p.dx, p.x, (size_t)p.m * p.k * 2), QVL_OK);
  assert_int_equal(E.gpu->graph_launch(E.gpu, graph), QVL_OK);
  uint16_t *got = download(y, (size_t)(p.m + GUARD) * p.n), *want = run_kernel(&p);
  check("graph replay on new x", &p, got, 7, 0);
  assert_memory_equal(got, want, (size_t)(p.m + GUARD) * p.n * 2);
  printf("  graph replay: the eager launch's bits\n");
  E.gpu->graph_free(E.gpu, graph);
  E.gpu->free(E.gpu, y);
  free(got), free(want);
  problem_free(&p);
}

/* ---- the rotary epilogue ---------------------------------------------------------------------------------------- */

/* CUDA_WG_ROPE on pair-ordered weights against (a) the backend's linear on the natural weights then rope_qk (the
 * same roundings; only the f32 sums' order differs) and (b) the host: a as above, then rope in f32 (x[d] c - x[d+h] s,
 * x[d+h] c' + x[d] s') rounded to bf16. Columns past 2 heads hd (v) are the plain product. */
static void rope_case(int64_t m, int heads, int hd, int k, int bias, int sample) {
  const int n = 3 * heads * hd, rot = 2 * heads * hd;
  problem p;
  problem_make(&p, CUDA_WG_NONE, m, n, k, bias);
  float *cs = malloc((size_t)m * hd * 2 * sizeof(float));
  tu_uniform(cs, (size_t)m * hd * 2, -1, 1, &E.rng); /* cos rows, then sin rows, each row's halves equal */
  for (size_t r = 0; r < (size_t)m * 2; r++) memcpy(cs + r * hd + hd / 2, cs + r * hd, (size_t)hd / 2 * sizeof(float));
  void *dcs = dev_bytes(cs, (size_t)m * hd * 2 * sizeof(float));
  const float *dcos = dcs, *dsin = (const float *)dcs + (size_t)m * hd;
  /* pair-ordered copies of w and bias */
  uint16_t *wp = malloc((size_t)n * k * 2), *bp = malloc((size_t)n * 2);
  for (int r = 0; r < n; r++) {
    const int src = r < rot ? qvl_rope_pair_row(r, hd) : r;
    memcpy(wp + (size_t)r * k, p.w + (size_t)src * k, (size_t)k * 2);
    bp[r] = p.b[src];
  }
  void *dwp = dev_bytes(wp, (size_t)n * k * 2), *dbp = dev_bytes(bp, (size_t)n * 2);
  /* (a): linear + rope_qk on the natural weights */
  void *z = dev_y(&p), *y = dev_y(&p);
  assert_int_equal(E.gpu->linear(E.gpu, z, p.dx, p.dw, bias ? p.db : NULL, m, n, k, QVL_EPI_NONE), QVL_OK);
  assert_int_equal(cuda_rope_qk(z, dcos, dsin, m, heads, hd, stream()), QVL_OK);
  assert_int_equal(E.gpu->linear_rope(E.gpu, y, p.dx, dwp, bias ? dbp : NULL, dcos, dsin, m, n, k, heads, hd), QVL_OK);
  uint16_t *hy = download(y, (size_t)(m + GUARD) * n), *hz = download(z, (size_t)(m + GUARD) * n);
  size_t far = 0, same = 0, total = (size_t)m * n;
  double e = 0, r2 = 0;
  for (size_t i = 0; i < total; i++) {
    const double a = qvl_bf16_to_f32(hy[i]), b = qvl_bf16_to_f32(hz[i]);
    e += (a - b) * (a - b), r2 += b * b;
    far += ulps(hy[i], hz[i]) > 2, same += hy[i] == hz[i];
  }
  char name[96];
  snprintf(name, sizeof name, "rope m %lld %d heads of %d k %d%s", (long long)m, heads, hd, k, bias ? " bias" : "");
  const double rel = sqrt(e / (r2 > 0 ? r2 : 1));
  printf("  %-52s vs linear + rope_qk: rel_l2 %.2e, %.3f%% bit-equal, %zu > 2 ulps\n", name, rel,
         100.0 * (double)same / (double)total, far);
  if (!(rel <= 4e-3) || far > total / 1000) fail_msg("%s: against linear + rope_qk: rel_l2 %.3e, %zu far", name, rel, far);
  /* (b): the host on sampled rows */
  size_t bad = 0, guard = 0, n_cmp = 0;
  e = r2 = 0;
  for (size_t i = 0; i < total; i++) bad += !isfinite(qvl_bf16_to_f32(hy[i]));
  for (size_t i = total; i < total + (size_t)GUARD * n; i++) guard += hy[i] != POISON;
  if (bad || guard) fail_msg("%s: %zu outputs not finite (unwritten?), %zu guard elements changed", name, bad, guard);
  const int half = hd / 2;
  for (int64_t r = 0; r < m; r++) {
    if (sample && r % sample && r != m - 1) continue;
    for (int j = 0; j < n; j++) {
      float want = qvl_bf16_to_f32(ref_at(&p, r, j));
      if (j < rot) {
        const int d = j % hd, base = j - d, dd = d < half ? d : d - half;
        const float x1 = qvl_bf16_to_f32(ref_at(&p, r, base + dd)), x2 = qvl_bf16_to_f32(ref_at(&p, r, base + dd + half));
        const float c = cs[r * hd + d], sn = cs[((size_t)m + r) * hd + d];
        want = qvl_bf16_to_f32(qvl_f32_to_bf16(d < half ? fmaf(x1, c, -(x2 * sn)) : fmaf(x2, c, x1 * sn)));
      }
      const double a = qvl_bf16_to_f32(hy[r * n + j]);
      e += (a - want) * (a - want), r2 += (double)want * want, n_cmp++;
    }
  }
  const double rel_h = sqrt(e / (r2 > 0 ? r2 : 1));
  printf("  %-52s vs host (%zu outputs): rel_l2 %.2e\n", name, n_cmp, rel_h);
  if (!(rel_h <= 4e-3)) fail_msg("%s: rel_l2 %.3e against the host > 4e-3", name, rel_h);
  free(hy), free(hz), free(cs), free(wp), free(bp);
  E.gpu->free(E.gpu, z), E.gpu->free(E.gpu, y), E.gpu->free(E.gpu, dcs), E.gpu->free(E.gpu, dwp);
  E.gpu->free(E.gpu, dbp);
  problem_free(&p);
}

static void test_rope(void **s) {
  (void)s;
  assert_non_null(E.gpu->linear_rope);
  rope_case(300, 16, 72, 1152, 1, 7);  /* Qwen3-VL-8B: 3456 columns, q | k tiles 0-8, v from tile 9 */
  rope_case(77, 4, 64, 128, 0, 0);     /* 768 columns: the v columns start inside tile 2 */
  rope_case(4097, 16, 80, 64, 1, 37);  /* Qwen2.5-VL's head_dim 80, one k step */
  rope_case(2000, 16, 64, 1024, 1, 41); /* Qwen3-VL-2B: 3072 columns */
  /* the question at rows 0: this shape runs; head_dim % 8 and n % 64 do not */
  void *w = dev_bytes(NULL, 4096 * 64 * 2);
  assert_int_equal(E.gpu->linear_rope(E.gpu, NULL, NULL, w, NULL, NULL, NULL, 0, 3456, 64, 16, 72), QVL_OK);
  assert_int_equal(E.gpu->linear_rope(E.gpu, NULL, NULL, w, NULL, NULL, NULL, 0, 3 * 16 * 36, 64, 16, 36),
                   QVL_ERR_UNSUPPORTED);
  assert_int_equal(E.gpu->linear_rope(E.gpu, NULL, NULL, w, NULL, NULL, NULL, 0, 3 * 4 * 40, 64, 4, 40),
                   QVL_ERR_UNSUPPORTED);
  E.gpu->free(E.gpu, w);
  printf("  rows 0: 3456 x 64 with 16 heads of 72 runs; head_dim 36 and n 480 do not\n");
}

static void test_refusals(void **s) {
  (void)s;
  const int64_t m = 300;
  static const struct { int epi, n, k, shift, res; const char *why; } C[] = {
    {CUDA_WG_NONE, 96, 128, 0, 0, "n % 64"},
    {CUDA_WG_GELU_TANH, 128, 96, 0, 0, "k % 64"},
    {CUDA_WG_NONE, 128, 128, 1, 0, "y not 16-byte aligned"},
    {CUDA_WG_RESIDUAL, 128, 128, 0, 1, "residual NULL"},
  };
  for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
    problem p;
    problem_make(&p, C[i].epi, m, C[i].n, C[i].k, 1);
    void *y = dev_y(&p);
    int rc = cuda_gemm_wgmma(p.epi, (uint16_t *)y + C[i].shift, C[i].res ? NULL : y, p.dx, p.dw, p.db, m, p.n, p.k,
                             stream());
    uint16_t *h = download(y, (size_t)(m + GUARD) * p.n);
    size_t changed = 0;
    for (size_t j = 0; j < (size_t)(m + GUARD) * p.n; j++)
      changed += h[j] != (p.epi == CUDA_WG_RESIDUAL && j < (size_t)m * p.n ? p.res[j] : POISON);
    printf("  refused (%s): %s, %zu outputs changed\n", C[i].why, qvl_status_name(rc), changed);
    assert_true(rc == QVL_ERR_UNSUPPORTED || rc == QVL_ERR_INVALID_ARG);
    assert_int_equal(changed, 0);
    free(h);
    E.gpu->free(E.gpu, y);
    problem_free(&p);
  }
}

/* ---- bench -------------------------------------------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

enum { WARM = 3, REPS = 25 };

typedef struct bench_case {
  qvl_backend *lt; /* NULL: the kernel */
  int64_t m;
  int n, k, epi;
  void *x, *w, *b, *y;
  float *cs;       /* CUDA_WG_ROPE: cos [m][72], then sin */
} bench_case;

static int bench_op(const bench_case *c) {
  if (c->epi == CUDA_WG_ROPE) { /* 16 heads of 72 */
    const float *sn = c->cs + c->m * 72;
    if (!c->lt)
      return cuda_gemm_wgmma_rope(c->y, c->x, c->w, c->b, c->cs, sn, c->m, c->n, c->k, 2 * 16 * 72, 72, stream());
    int rc = c->lt->linear(c->lt, c->y, c->x, c->w, c->b, c->m, c->n, c->k, QVL_EPI_NONE);
    return rc ? rc : cuda_rope_qk(c->y, c->cs, sn, c->m, 16, 72, ((cuda_ctx *)c->lt->ctx)->stream);
  }
  if (c->lt) return c->lt->linear(c->lt, c->y, c->x, c->w, c->b, c->m, c->n, c->k, c->epi);
  return cuda_gemm_wgmma(c->epi, c->y, c->epi == CUDA_WG_RESIDUAL ? c->y : NULL, c->x, c->w, c->b, c->m, c->n, c->k,
                         stream());
}

static float median_ms(const bench_case *c) {
  cudaStream_t st = c->lt ? ((cuda_ctx *)c->lt->ctx)->stream : stream();
  cudaEvent_t e0, e1;
  float ms[REPS];
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  for (int i = 0; i < WARM; i++) assert_int_equal(bench_op(c), QVL_OK);
  for (int i = 0; i < REPS; i++) {
    cudaEventRecord(e0, st);
    assert_int_equal(bench_op(c), QVL_OK);
    cudaEventRecord(e1, st);
    cudaEventSynchronize(e1);
    cudaEventElapsedTime(&ms[i], e0, e1);
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  qsort(ms, REPS, sizeof ms[0], cmp_float);
  return ms[REPS / 2];
}

/* A device buffer of n bf16 on backend be: 1 Mi random values in [lo, hi), repeated. */
static void *dev_random(qvl_backend *be, size_t n, float lo, float hi) {
  const size_t chunk = (size_t)1 << 20;
  uint16_t *h = rnd_bf16(chunk, lo, hi);
  void *d;
  assert_int_equal(be->alloc(be, &d, n * 2), QVL_OK);
  for (size_t i = 0; i < n; i += chunk)
    assert_int_equal(be->upload(be, (uint16_t *)d + i, h, (n - i < chunk ? n - i : chunk) * 2), QVL_OK);
  free(h);
  return d;
}

static void bench_shape(qvl_backend *lt, int64_t m, int n, int k, int epi, const char *what) {
  const double flop = 2.0 * (double)m * n * k;
  float t[2];
  for (int i = 0; i < 2; i++) { /* 0: the kernel on E.gpu, 1: cuBLASLt on lt */
    qvl_backend *be = i ? lt : E.gpu;
    bench_case c = {.lt = i ? lt : NULL, .m = m, .n = n, .k = k, .epi = epi};
    c.x = dev_random(be, (size_t)m * k, -2, 2), c.w = dev_random(be, (size_t)n * k, -0.05f, 0.05f);
    c.b = dev_random(be, (size_t)n, -0.5f, 0.5f), c.y = dev_random(be, (size_t)m * n, -1, 1);
    if (epi == CUDA_WG_ROPE) { /* cos and sin [m][72] f32 */
      float *h = malloc((size_t)m * 144 * sizeof(float));
      tu_uniform(h, (size_t)m * 144, -1, 1, &E.rng);
      for (size_t r = 0; r < (size_t)m * 2; r++) memcpy(h + r * 72 + 36, h + r * 72, 36 * sizeof(float));
      assert_int_equal(be->alloc(be, (void **)&c.cs, (size_t)m * 144 * sizeof(float)), QVL_OK);
      assert_int_equal(be->upload(be, c.cs, h, (size_t)m * 144 * sizeof(float)), QVL_OK);
      free(h);
    }
    t[i] = median_ms(&c);
    be->free(be, c.x), be->free(be, c.w), be->free(be, c.b), be->free(be, c.y), be->free(be, c.cs);
    be->trim(be);
  }
  printf("bench gemm_wgmma m %lld n %d k %d %s bias [%s]: kernel %.3f ms %.0f TFLOP/s | cuBLASLt%s %.3f ms %.0f "
         "TFLOP/s | kernel / cuBLASLt %.3f\n",
         (long long)m, n, k, epi_name(epi), what, t[0], flop / (t[0] * 1e9), epi == CUDA_WG_ROPE ? " + rope_qk" : "",
         t[1], flop / (t[1] * 1e9), t[0] / t[1]);
  fflush(stdout);
}

static void test_bench(void **s) {
  (void)s;
  const char *e = getenv("QVL_GEMM_WGMMA_BENCH");
  if (!e || !*e || *e == '0') {
    printf("  timing skipped (set QVL_GEMM_WGMMA_BENCH=1)\n");
    skip();
  }
  qvl_backend *lt = NULL;
  qvl_err err = {0};
  setenv("QVL_GEMM_WGMMA", "0", 1); /* read at creation: this backend's linear is cuBLASLt's, tuned */
  assert_int_equal(qvl_backend_cuda_create(&lt, 0, &err), QVL_OK);
  unsetenv("QVL_GEMM_WGMMA");
  printf("  device %s\n", E.gpu->device);
  bench_shape(lt, 65536, 3456, 1152, CUDA_WG_NONE, "Qwen3-VL qkv, 64 x 512");
  bench_shape(lt, 65536, 3456, 1152, CUDA_WG_ROPE, "Qwen3-VL qkv with the rotary");
  bench_shape(lt, 65536, 1152, 1152, CUDA_WG_RESIDUAL, "Qwen3-VL proj");
  bench_shape(lt, 65536, 4352, 1152, CUDA_WG_GELU_TANH, "Qwen3-VL fc1");
  bench_shape(lt, 65536, 1152, 4352, CUDA_WG_RESIDUAL, "Qwen3-VL fc2");
  bench_shape(lt, 65536, 3840, 1280, CUDA_WG_NONE, "Qwen2.5-VL qkv, 64 x 448");
  bench_shape(lt, 65536, 1280, 3456, CUDA_WG_RESIDUAL, "Qwen2.5-VL down");
  lt->destroy(lt);
}

static int setup(void **s) {
  (void)s;
  E.rng = tu_seed();
  if (qvl_backend_cuda_create(&E.gpu, 0, &E.err)) {
    fprintf(stderr, "cuda backend: %s\n", E.err.msg);
    return -1;
  }
  return 0;
}

static int teardown(void **s) {
  (void)s;
  if (E.gpu) E.gpu->destroy(E.gpu);
  return 0;
}

int main(void) {
  if (qvl_cuda_device_count() == 0) {
    printf("test_gpu_gemm_wgmma: no CUDA device here; skipped\n");
    return 0;
  }
  const struct CMUnitTest all[] = {
    cmocka_unit_test(test_shapes), cmocka_unit_test(test_persistent), cmocka_unit_test(test_linear),
    cmocka_unit_test(test_rope),   cmocka_unit_test(test_graph),      cmocka_unit_test(test_refusals),
    cmocka_unit_test(test_bench),
  };
  const struct CMUnitTest refusals_only[] = {cmocka_unit_test(test_refusals)};
  int rc = cuda_gemm_wgmma_init();
  if (rc == QVL_ERR_UNSUPPORTED) {
    printf("test_gpu_gemm_wgmma: not compute capability 9.0 with the sm_90a image and cuTensorMapEncodeTiled: the "
           "kernel cases are skipped, the refusals run\n");
    return cmocka_run_group_tests(refusals_only, setup, teardown);
  }
  if (rc != QVL_OK) {
    printf("test_gpu_gemm_wgmma: cuda_gemm_wgmma_init failed (%d)\n", rc);
    return 1;
  }
  return cmocka_run_group_tests(all, setup, teardown);
}
