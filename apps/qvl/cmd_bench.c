/* qvl bench vit: times the vision tower on synthetic pixel rows already in device memory (as the GPU
 * preprocessing path leaves them) and prints one JSON line per case: median and min ms over --iters runs
 * after --warmup runs (wall clock around a call that ends by synchronising the device), patches/s,
 * achieved TFLOP/s over the model's useful FLOPs (GEMMs + attention 4*s^2*d per sequence and head), % of the
 * measured H100 bf16 dense peak (790 TFLOP/s, ../shared/research/kernels.md), peak device memory.
 * --dump FILE writes each case's features (safetensors) for bench/hf_vit.py to compare. With QVL_PROFILE=1 the
 * line also carries the device time per run spent in GEMMs, attention and everything else (event pairs around
 * every op; they perturb the total slightly, so time without it); QVL_PROFILE=2 also prints device time per op
 * name and shape on stderr at each profile call (the second block of a case covers its --iters runs). Each case
 * first re-plans the tower's device memory for exactly its size (peak_mem_gib counts from there: weights, that
 * plan, the pixel rows; plan_gib is the plan alone). --graphs auto|on|off: CUDA-graph replay of the forward
 * where it pays (calls of up to 16,384 patches; the default), always, or never. --attn-only times the attention
 * op alone, rotary included, on each case's sequences. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "models/vision_index.h"
#include "qvl_internal.h"

#define PEAK_TFLOPS 790.0

typedef struct bench_case {
  int n, h, w; /* images of h x w pixels */
} bench_case;

static double attn_flops(const int32_t *cu, int n, int64_t d) {
  double f = 0;
  for (int i = 0; i < n; i++) f += 4.0 * (double)(cu[i + 1] - cu[i]) * (cu[i + 1] - cu[i]) * (double)d;
  return f;
}

/* Useful FLOPs of one tower call. */
static double tower_flops(const qvl_config *c, const int32_t *grid, int n, int64_t N) {
  const qvl_vision_config *v = &c->vision;
  double D = v->hidden, F = v->intermediate, K = v->in_channels * v->temporal_patch * v->patch * v->patch;
  double G = (double)N / (v->merge * v->merge), D4 = D * v->merge * v->merge, O = v->out_hidden;
  int gated = c->arch == QVL_ARCH_QWEN2_5_VL;
  double dense = 2.0 * N * D * (3 * D + D) + 2.0 * N * D * F * (gated ? 3 : 2);
  int32_t *cu = malloc((size_t)(N + 1) * sizeof(int32_t));
  int n_full = vis_cu_seqlens(cu, grid, n);
  double full = attn_flops(cu, n_full, v->hidden), win = full;
  if (gated) {
    int w = v->window_size / v->merge / v->patch;
    int32_t *wi = malloc((size_t)(N / 4 + 1) * sizeof(int32_t));
    int32_t *cw = realloc(cu, (size_t)(vis_count_windows(grid, n, v->merge, w) + 1) * sizeof(int32_t));
    cu = cw;
    win = attn_flops(cw, vis_window_index(wi, cw, grid, n, v->merge, w), v->hidden);
    free(wi);
  }
  free(cu);
  double f = 2.0 * N * K * D + (2.0 * G * D4 * D4 + 2.0 * G * D4 * O) * (1 + v->n_deepstack);
  for (int l = 0; l < v->depth; l++) {
    int is_full = !gated;
    for (int i = 0; i < v->n_fullatt; i++) is_full |= v->fullatt[i] == l;
    f += dense + (is_full ? full : win);
  }
  return f;
}

static int parse_case(bench_case *bc, const char *s) {
  char tail;
  return sscanf(s, "%dx%dx%d%c", &bc->n, &bc->h, &bc->w, &tail) == 3 && bc->n > 0 && bc->h > 0 && bc->w > 0 ? 0 : 1;
}

/* Rotary tables as the towers' are made: cos/sin of concat(angles, angles), so each pair (d, d + hd/2) turns by one
 * angle and the repeated in-place rotation of an unfused candidate keeps q and k bounded; angles random in +-60. */
static int bench_tables(qvl_backend *b, void **cos, void **sin, int64_t rows, int hd) {
  size_t n = (size_t)(rows * hd), half = (size_t)hd / 2;
  float *c = malloc(n * sizeof(float)), *s = malloc(n * sizeof(float)), *ang = malloc(n / 2 * sizeof(float));
  int rc = !c || !s || !ang ? QVL_ERR_NOMEM : QVL_OK;
  if (!rc) qvl_counter_fill(ang, "rotary:bench", 0, (int64_t)(n / 2), 0.0, 60.0);
  for (size_t i = 0; !rc && i < n; i++) {
    float a = ang[i / (size_t)hd * half + i % half];
    c[i] = cosf(a), s[i] = sinf(a);
  }
  if (!rc) rc = b->alloc(b, cos, n * sizeof(float));
  if (!rc) rc = b->alloc(b, sin, n * sizeof(float));
  if (!rc) rc = b->upload(b, *cos, c, n * sizeof(float));
  if (!rc) rc = b->upload(b, *sin, s, n * sizeof(float));
  if (!rc) rc = b->sync(b); /* the uploads have read c and s */
  free(c), free(s), free(ang);
  return rc;
}

/* --attn-only: the attention op alone, with the rotary as the towers run it, on the case's full-attention sequences
 * (one per image) and, for Qwen2.5-VL, its 64-patch windows, on random q/k/v; the first run (untimed) picks the
 * kernel and its configuration. */
static int run_attn(qvl_engine *e, const bench_case *bc, const int32_t *grid, int64_t N, int iters, int warmup) {
  const qvl_config *c = qvl_engine_config(e);
  const qvl_vision_config *v = &c->vision;
  qvl_backend *b = qvl_engine_backend(e);
  int64_t HD = (int64_t)v->heads * v->head_dim, G = N / (v->merge * v->merge);
  int32_t *cu = malloc((size_t)(G + 1) * 2 * sizeof(int32_t)), *wi = malloc((size_t)(G + 1) * sizeof(int32_t));
  float *host = malloc((size_t)(N * 3 * HD) * sizeof(float));
  double *ms = calloc((size_t)iters, sizeof(double));
  void *qkv = NULL, *o = NULL, *dcu = NULL, *cos = NULL, *sin = NULL;
  int rc = !cu || !wi || !host || !ms ? QVL_ERR_NOMEM : QVL_OK;
  if (!rc) qvl_counter_fill(host, "qkv:bench", 0, N * 3 * HD, 0.0, 2.0);
  if (!rc) rc = b->alloc(b, &qkv, (size_t)(N * 3 * HD) * b->elem_bytes);
  if (!rc) rc = b->alloc(b, &o, (size_t)(N * HD) * b->elem_bytes);
  if (!rc) rc = b->alloc(b, &dcu, (size_t)(G + 1) * sizeof(int32_t));
  if (!rc) rc = b->upload_f32(b, qkv, host, N * 3 * HD);
  if (!rc) rc = bench_tables(b, &cos, &sin, N, v->head_dim);
  for (int kind = 0; !rc && kind < (c->arch == QVL_ARCH_QWEN2_5_VL ? 2 : 1); kind++) {
    int win = v->window_size / v->merge / v->patch;
    int n_seq = kind ? vis_window_index(wi, cu, grid, bc->n, v->merge, win) : vis_cu_seqlens(cu, grid, bc->n);
    void *att = NULL;
    rc = b->upload(b, dcu, cu, (size_t)(n_seq + 1) * sizeof(int32_t));
    if (!rc) rc = b->attention_prepare(b, &att, cu, dcu, n_seq, v->heads, v->head_dim);
    for (int i = 0; !rc && i < warmup + iters; i++) {
      double t0 = app_now_ms();
      rc = b->attention(b, o, qkv, att, cos, sin, 1.0f / sqrtf((float)v->head_dim));
      if (!rc) rc = b->sync(b);
      if (i >= warmup) ms[i - warmup] = app_now_ms() - t0;
    }
    b->attention_free(b, att);
    if (rc) break;
    double med = app_median(ms, iters), fl = 0;
    for (int i = 0; i < n_seq; i++) fl += 4.0 * (double)(cu[i + 1] - cu[i]) * (cu[i + 1] - cu[i]) * (double)HD;
    printf("{\"bench\": \"vit_attn\", \"arch\": \"%s\", \"device\": \"%s\", \"images\": \"%dx%dx%d\", "
           "\"sequences\": \"%s\", \"n_seq\": %d, \"heads\": %d, \"head_dim\": %d, \"patches\": %lld, "
           "\"median_ms\": %.3f, \"min_ms\": %.3f, \"tflops\": %.1f, \"pct_peak\": %.1f, \"iters\": %d}\n",
           c->arch_name, b->device, bc->n, bc->h, bc->w, kind ? "windows" : "full", n_seq, v->heads, v->head_dim,
           (long long)N, med, ms[0], fl / med / 1e9, fl / med / 1e9 / PEAK_TFLOPS * 100, iters);
    fflush(stdout);
  }
  if (rc) fprintf(stderr, "qvl bench: attention: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
  b->free(b, qkv), b->free(b, o), b->free(b, dcu), b->free(b, cos), b->free(b, sin);
  free(cu), free(wi), free(host), free(ms);
  return rc ? 1 : 0;
}

/* Runs one case; returns 0 and prints its line. The vision plan is sized to the case first (peak memory counts
 * from there: weights, the plan, the pixel rows), with graph replay as asked (-1 auto, 0 off, 1 on). */
static int run_case(qvl_engine *e, const bench_case *bc, int iters, int warmup, int graphs, int attn_only,
                    st_entry *dump, float **dump_data) {
  const qvl_config *c = qvl_engine_config(e);
  const qvl_vision_config *v = &c->vision;
  qvl_backend *b = qvl_engine_backend(e);
  int f = v->patch * v->merge, k = v->in_channels * v->temporal_patch * v->patch * v->patch;
  if (bc->h % f || bc->w % f || bc->n > 4096)
    return fprintf(stderr, "qvl bench: %dx%d is not a multiple of %d pixels\n", bc->h, bc->w, f), 1;
  int32_t *grid = malloc((size_t)bc->n * 3 * sizeof(int32_t));
  for (int i = 0; i < bc->n; i++) grid[3 * i] = 1, grid[3 * i + 1] = bc->h / v->patch, grid[3 * i + 2] = bc->w / v->patch;
  int64_t N = (int64_t)bc->n * (bc->h / v->patch) * (bc->w / v->patch);
  int rc = qvl_engine_vision_limits(e, 0, 0, graphs); /* release the previous case's plan */
  b->mem_peak = b->mem_held;
  if (!rc) rc = qvl_engine_vision_limits(e, N, bc->n, graphs);
  if (rc) {
    fprintf(stderr, "qvl bench: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
    free(grid);
    return 1;
  }
  if (attn_only) {
    rc = run_attn(e, bc, grid, N, iters, warmup);
    free(grid);
    return rc;
  }
  float *host = malloc((size_t)(N * k) * sizeof(float));
  void *dev = NULL;
  qvl_counter_fill(host, "pixel_values:bench", 0, N * k, 0.2, 1.8);
  rc = b->alloc(b, &dev, (size_t)(N * k) * b->elem_bytes);
  if (!rc) rc = b->upload_f32(b, dev, host, N * k);
  vis_input in = {grid, bc->n, NULL, dev, 0, 0};
  double *ms = calloc((size_t)iters, sizeof(double)), prof[3] = {0, 0, 0};
  for (int i = 0; !rc && i < warmup + iters; i++) {
    if (i == warmup && b->profile) rc = b->profile(b, prof); /* drop the warm-up runs */
    double t0 = app_now_ms();
    if (!rc) rc = qvl_engine_vision_input(e, &in, NULL, NULL, NULL);
    if (i >= warmup) ms[i - warmup] = app_now_ms() - t0;
  }
  if (!rc && b->profile) rc = b->profile(b, prof);
  qvl_vision_out out = {0};
  if (!rc && dump) rc = qvl_engine_vision_input(e, &in, &out, NULL, NULL);
  if (rc) {
    fprintf(stderr, "qvl bench: %s (%s)\n", qvl_errmsg(e), qvl_status_name(rc));
  } else {
    double med = app_median(ms, iters), fl = tower_flops(c, grid, bc->n, N);
    printf("{\"bench\": \"vit\", \"arch\": \"%s\", \"device\": \"%s\", \"images\": \"%dx%dx%d\", \"patches\": %lld, "
           "\"median_ms\": %.3f, \"min_ms\": %.3f, \"patches_per_s\": %.0f, \"tflops\": %.1f, \"pct_peak\": %.1f, "
           "\"peak_mem_gib\": %.2f, \"plan_gib\": %.2f, \"graphs\": \"%s\", \"iters\": %d",
           c->arch_name, b->device, bc->n, bc->h, bc->w, (long long)N, med, ms[0], N / med * 1e3, fl / med / 1e9,
           fl / med / 1e9 / PEAK_TFLOPS * 100, b->mem_peak / (double)(1 << 30),
           qvl_engine_vision_bytes(e) / (double)(1 << 30), graphs < 0 ? "auto" : graphs ? "on" : "off", iters);
    if (b->profile)
      printf(", \"gemm_ms\": %.3f, \"attention_ms\": %.3f, \"other_ms\": %.3f", prof[0] / iters, prof[1] / iters,
             prof[2] / iters);
    printf("}\n");
    fflush(stdout);
  }
  if (!rc && dump) { /* keep the main features for the dump; free the rest */
    *dump_data = out.data[0];
    out.data[0] = NULL;
    dump->dtype = ST_F32, dump->ndim = 2, dump->shape[0] = out.rows, dump->shape[1] = out.cols;
    dump->data = *dump_data;
    qvl_vision_out_free(&out);
  }
  b->free(b, dev);
  free(ms), free(host), free(grid);
  return rc ? 1 : 0;
}

int cmd_bench(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "tok")) return cmd_bench_tok(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "pre")) return cmd_bench_pre(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "lm")) return cmd_bench_lm(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "e2e")) return cmd_bench_e2e(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "attn-lm")) return cmd_bench_attn(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "linear")) return cmd_bench_linear(argc - 1, argv + 1);
  if (argc < 2 || strcmp(argv[1], "vit")) {
    fprintf(stderr, "usage: qvl bench vit --model DIR [--dummy] --images NxHxW ... [--iters N] [--warmup N] "
                    "[--dump FILE] [--graphs auto|on|off] [--attn-only]\n");
    return 2;
  }
  bench_case cases[32];
  int n_cases = 0, iters = 20, warmup = 3, graphs = -1, attn_only = 0;
  const char *dump = NULL;
  char *rest[64];
  int n_rest = 0;
  rest[n_rest++] = argv[0];
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--images") && val && n_cases < 32) {
      if (parse_case(&cases[n_cases++], val)) return fprintf(stderr, "qvl bench: --images wants NxHxW\n"), 2;
      i++;
    } else if (!strcmp(a, "--iters") && val) iters = atoi(argv[++i]);
    else if (!strcmp(a, "--warmup") && val) warmup = atoi(argv[++i]);
    else if (!strcmp(a, "--dump") && val) dump = argv[++i];
    else if (!strcmp(a, "--attn-only")) attn_only = 1;
    else if (!strcmp(a, "--graphs") && val) {
      graphs = !strcmp(val, "on") ? 1 : !strcmp(val, "off") ? 0 : !strcmp(val, "auto") ? -1 : -2;
      if (graphs == -2) return fprintf(stderr, "qvl bench: --graphs wants auto, on or off\n"), 2;
      i++;
    }
    else if (n_rest < 63) rest[n_rest++] = argv[i];
  }
  app_opts o;
  if (app_parse(&o, n_rest, rest)) return 2;
  if (!n_cases || iters < 1 || warmup < 0) return fprintf(stderr, "qvl bench: needs --images and --iters >= 1\n"), 2;
  qvl_engine *e = app_open(&o);
  if (!e) return 1;
  st_entry ents[32];
  float *data[32] = {0};
  char names[32][32];
  int rc = 0;
  for (int i = 0; i < n_cases && !rc; i++) {
    snprintf(names[i], sizeof names[i], "case%d.features", i);
    ents[i] = (st_entry){.name = names[i]};
    rc = run_case(e, &cases[i], iters, warmup, graphs, attn_only, dump && !attn_only ? &ents[i] : NULL, &data[i]);
  }
  if (!rc && dump && !attn_only) {
    qvl_err err = {0};
    if ((rc = st_write(dump, ents, n_cases, NULL, NULL, &err))) fprintf(stderr, "qvl bench: %s\n", err.msg);
  }
  for (int i = 0; i < n_cases; i++) free(data[i]);
  qvl_engine_close(e);
  return rc ? 1 : 0;
}
