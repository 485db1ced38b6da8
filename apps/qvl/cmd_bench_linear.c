/* qvl bench linear: the language model's linear layers alone at decode row counts (--m, default 1 and 8) on the
 * CUDA backend, with the shapes of --model DIR's config.json: qkv (+ bias where the model has one), o (+= residual),
 * gate|up, down (+= residual), lm_head. Each shape runs three ways, one backend each:
 *   cublaslt  the cuBLASLt heuristic's first algorithm, what decode ran before gemv.cu (QVL_GEMV=0 QVL_GEMM_TUNE=0)
 *   gemv      gemv.cu's kernel (QVL_GEMV=1)
 *   tuned     what cuda_linear keeps after timing both on the first call (the default)
 * Each run reads the next of several weight copies (256 MiB or more in all, over 4x the L2), so weights come from
 * HBM as in a decode step. Device time of the op (the backend's CUDA events, QVL_PROFILE), median of --iters after
 * --warmup; GB/s counts w, x and y bytes (on an H100 the floor is 3.35 TB/s, H200 4.8). One JSON line per case,
 * then a table of the three side by side on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"
#include "backend/backend.h"
#include "core/half.h"
#include "io/config.h"

#ifdef QVL_HAVE_CUDA

enum { N_SHAPES = 5, N_WAYS = 3, MAX_M = 8, MAX_ROWS = 16 }; /* --m values, each at most MAX_ROWS */
static const int64_t WEIGHT_SPAN = (int64_t)256 << 20; /* bytes of weight copies per shape */

typedef struct lin_shape {
  const char *name;
  int n, k, bias, epi;
} lin_shape;

static const char *const WAYS[N_WAYS] = {"cublaslt", "gemv", "tuned"};

/* n bf16 values in [-scale, scale) at d, uploaded in chunks from one host pattern. */
static int fill(qvl_backend *b, void *d, int64_t n, float scale) {
  enum { CHUNK = 1 << 22 };
  uint16_t *h = malloc((size_t)CHUNK * 2);
  if (!h) return QVL_ERR_NOMEM;
  uint32_t x = 12345;
  for (int i = 0; i < CHUNK; i++) {
    x = x * 1664525u + 1013904223u;
    h[i] = qvl_f32_to_bf16(((float)(x >> 8) / (float)(1 << 24) * 2.f - 1.f) * scale);
  }
  int rc = QVL_OK;
  for (int64_t i = 0; !rc && i < n; i += CHUNK)
    rc = b->upload(b, (uint16_t *)d + i, h, (size_t)(n - i < CHUNK ? n - i : CHUNK) * 2);
  free(h);
  return rc;
}

/* One shape at each m on backend b; medians in us [n_m]. */
static int run_shape(qvl_backend *b, const char *way, const lin_shape *s, const int *ms, int n_m, int iters,
                     int warmup, double *us) {
  int64_t wn = (int64_t)s->n * s->k, copies = (WEIGHT_SPAN + 2 * wn - 1) / (2 * wn);
  void *w = NULL, *bias = NULL, *x = NULL, *y = NULL;
  double *t = calloc((size_t)iters, sizeof(double)), p[3];
  int rc = t ? b->alloc(b, &w, (size_t)(copies * wn) * 2) : QVL_ERR_NOMEM;
  if (!rc) rc = b->alloc(b, &bias, (size_t)s->n * 2);
  if (!rc) rc = b->alloc(b, &x, (size_t)MAX_ROWS * s->k * 2);
  if (!rc) rc = b->alloc(b, &y, (size_t)MAX_ROWS * s->n * 2);
  for (int64_t c = 0; !rc && c < copies; c++) rc = fill(b, (uint16_t *)w + c * wn, wn, 0.02f);
  if (!rc) rc = fill(b, bias, s->n, 0.5f);
  if (!rc) rc = fill(b, x, (int64_t)MAX_ROWS * s->k, 1.0f);
  if (!rc) rc = fill(b, y, (int64_t)MAX_ROWS * s->n, 1.0f);
  if (!rc) rc = b->profile(b, p); /* drops the uploads' marks */
  for (int j = 0; !rc && j < n_m; j++) {
    int m = ms[j];
    for (int i = -warmup; !rc && i < iters; i++) {
      const uint16_t *wi = (const uint16_t *)w + ((i + warmup) % copies) * wn;
      rc = b->linear(b, y, x, wi, s->bias ? bias : NULL, m, s->n, s->k, s->epi);
      if (!rc) rc = b->profile(b, p);
      if (!rc && i >= 0) t[i] = p[0];
    }
    if (rc) break;
    us[j] = app_median(t, iters) * 1e3;
    double bytes = 2.0 * ((double)wn + (double)m * s->k + (double)m * s->n * (s->epi == QVL_EPI_RESIDUAL ? 2 : 1));
    printf("{\"bench\": \"linear\", \"device\": \"%s\", \"kernel\": \"%s\", \"shape\": \"%s\", \"m\": %d, \"n\": %d, "
           "\"k\": %d, \"bias\": %s, \"residual\": %s, \"median_us\": %.2f, \"gb_per_s\": %.0f, \"weight_copies\": %lld, "
           "\"iters\": %d}\n",
           b->device, way, s->name, m, s->n, s->k, s->bias ? "true" : "false",
           s->epi == QVL_EPI_RESIDUAL ? "true" : "false", us[j], bytes / (us[j] * 1e3), (long long)copies, iters);
    fflush(stdout);
  }
  b->free(b, w), b->free(b, bias), b->free(b, x), b->free(b, y);
  free(t);
  return rc;
}

/* The environment that gives the way (read when cuda_linear first meets a shape). */
static void set_way(int way) {
  if (way == 0) setenv("QVL_GEMV", "0", 1), setenv("QVL_GEMM_TUNE", "0", 1);
  if (way == 1) setenv("QVL_GEMV", "1", 1), unsetenv("QVL_GEMM_TUNE");
  if (way == 2) unsetenv("QVL_GEMV"), unsetenv("QVL_GEMM_TUNE");
}

static int bench_ways(const lin_shape *sh, const int *ms, int n_m, int iters, int warmup,
                      double us[N_WAYS][N_SHAPES][MAX_M]) {
  qvl_err err = {0};
  int rc = QVL_OK;
  for (int v = 0; v < N_WAYS && !rc; v++) {
    qvl_backend *b = NULL;
    set_way(v);
    if ((rc = qvl_backend_cuda_create(&b, 0, &err))) {
      fprintf(stderr, "qvl bench linear: %s\n", err.msg);
      if (b) b->destroy(b);
      return rc;
    }
    for (int s = 0; s < N_SHAPES && !rc; s++) rc = run_shape(b, WAYS[v], &sh[s], ms, n_m, iters, warmup, us[v][s]);
    if (rc) fprintf(stderr, "qvl bench linear: %s (%s)\n", err.msg, qvl_status_name(rc));
    b->destroy(b);
  }
  return rc;
}

int cmd_bench_linear(int argc, char **argv) {
  const char *model = NULL;
  int ms[MAX_M], n_m = 0, iters = 50, warmup = 5, bad = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "--model") && has)
      model = argv[++i];
    else if (!strcmp(a, "--m") && has && n_m < MAX_M) {
      ms[n_m] = atoi(argv[++i]);
      bad |= ms[n_m] < 1 || ms[n_m] > MAX_ROWS;
      n_m++;
    }
    else if (!strcmp(a, "--iters") && has)
      iters = atoi(argv[++i]);
    else if (!strcmp(a, "--warmup") && has)
      warmup = atoi(argv[++i]);
    else
      bad = 1;
  }
  if (!n_m) ms[0] = 1, ms[1] = 8, n_m = 2;
  if (bad || !model || iters < 1 || warmup < 0)
    return fprintf(stderr, "usage: qvl bench linear --model DIR [--m N (1..16)]... [--iters N] [--warmup N]\n"), 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", model);
  qvl_config c;
  qvl_err err = {0};
  if (qvl_config_load(&c, path, &err)) return fprintf(stderr, "qvl bench linear: %s\n", err.msg), 1;
  const qvl_text_config *t = &c.text;
  const int qd = t->heads * t->head_dim, kvd = t->kv_heads * t->head_dim;
  const lin_shape sh[N_SHAPES] = {{"qkv", qd + 2 * kvd, t->hidden, t->attention_bias, QVL_EPI_NONE},
                                  {"o", t->hidden, qd, 0, QVL_EPI_RESIDUAL},
                                  {"gate_up", 2 * t->intermediate, t->hidden, 0, QVL_EPI_NONE},
                                  {"down", t->hidden, t->intermediate, 0, QVL_EPI_RESIDUAL},
                                  {"lm_head", t->vocab, t->hidden, 0, QVL_EPI_NONE}};
  setenv("QVL_PROFILE", "1", 1); /* the backend's per-op CUDA events */
  static double us[N_WAYS][N_SHAPES][MAX_M];
  int rc = bench_ways(sh, ms, n_m, iters, warmup, us);
  if (rc) return 1;
  fprintf(stderr, "%-8s %3s %7s %6s  %12s %12s %12s  %s\n", "shape", "m", "n", "k", "cublaslt us", "gemv us",
          "tuned us", "cublaslt/tuned");
  for (int s = 0; s < N_SHAPES; s++)
    for (int j = 0; j < n_m; j++)
      fprintf(stderr, "%-8s %3d %7d %6d  %12.2f %12.2f %12.2f  %.2fx\n", sh[s].name, ms[j], sh[s].n, sh[s].k,
              us[0][s][j], us[1][s][j], us[2][s][j], us[0][s][j] / us[2][s][j]);
  return 0;
}

#else

int cmd_bench_linear(int argc, char **argv) {
  (void)argc, (void)argv;
  fprintf(stderr, "qvl bench linear: this build has no CUDA backend\n");
  return 1;
}

#endif
