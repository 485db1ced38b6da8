/* Both vision towers on the CUDA backend (bf16) against the transformers fp32 goldens of the tiny configs:
 * relative L2 <= 1e-2 for the features and every DeepStack output. Skips, saying why, without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_ops.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "qvl_internal.h"
#include "testutil.h"

static const char *FIXTURES[][2] = {
  {"q25_17x23", "tests/data/tiny-qwen2_5_vl"}, {"q25_8x8", "tests/data/tiny-qwen2_5_vl"},
  {"q25_batch2", "tests/data/tiny-qwen2_5_vl"}, {"q25_video", "tests/data/tiny-qwen2_5_vl"},
  {"q3_17x23", "tests/data/tiny-qwen3_vl"},     {"q3_16x16", "tests/data/tiny-qwen3_vl"},
  {"q3_batch2", "tests/data/tiny-qwen3_vl"},    {"q3_video", "tests/data/tiny-qwen3_vl"},
};

static void check(const st_model *g, const char *fx, const char *name, const float *got, int64_t n) {
  const st_tensor *t = st_find(g, name);
  if (!t || t->numel != n) fail_msg("%s: golden %s missing or of another size", fx, name);
  float *ref = malloc((size_t)n * sizeof(float));
  assert_int_equal(st_to_f32(t, ref, NULL), QVL_OK);
  double rel = tu_rel_l2(got, ref, (size_t)n);
  printf("  %-10s %-12s cuda bf16 vs transformers fp32: rel_l2 %.2e\n", fx, name, rel);
  if (!(rel <= 1e-2)) fail_msg("%s %s: rel_l2 %.3e > 1e-2", fx, name, rel);
  free(ref);
}

static void test_fixture(void **state) {
  const char **f = *state;
  char path[256];
  snprintf(path, sizeof path, "tests/data/goldens/%s.safetensors", f[0]);
  st_model *g = NULL;
  qvl_err err = {0};
  if (st_open(&g, tu_path(path), &err)) fail_msg("%s", err.msg);
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path(f[1]), p.dummy = 1, p.backend = QVL_BACKEND_CUDA;
  qvl_engine *e = NULL;
  if (qvl_engine_open(&e, &p)) fail_msg("%s", qvl_errmsg(e));
  const qvl_vision_config *v = &qvl_engine_config(e)->vision;
  const st_tensor *gt = st_find(g, "image_grid_thw");
  int64_t g64[24], rows = 0;
  int n = (int)gt->shape[0];
  int32_t grid[24];
  assert_int_equal(st_to_i64(gt, g64, NULL), QVL_OK);
  for (int i = 0; i < 3 * n; i++) grid[i] = (int32_t)g64[i];
  for (int i = 0; i < n; i++) rows += (int64_t)grid[3 * i] * grid[3 * i + 1] * grid[3 * i + 2];
  int64_t k = v->in_channels * v->temporal_patch * v->patch * v->patch;
  char stream[64];
  snprintf(stream, sizeof stream, "pixel_values:%s", f[0]);
  float *px = malloc((size_t)(rows * k) * sizeof(float));
  qvl_counter_fill(px, stream, 0, rows * k, 0.2, 1.8);
  qvl_vision_out out;
  if (qvl_engine_vision(e, grid, n, px, &out, NULL, NULL)) fail_msg("%s", qvl_errmsg(e));
  check(g, f[0], "output", out.data[0], out.rows * out.cols);
  for (int i = 1; i < out.n; i++) {
    char name[32];
    snprintf(name, sizeof name, "deepstack.%d", i - 1);
    check(g, f[0], name, out.data[i], out.rows * out.cols);
  }
  qvl_vision_out_free(&out);
  free(px);
  qvl_engine_close(e);
  st_close(g);
}

/* Published sizes: the CUDA tower (bf16, MLP padded to 64) against the CPU f32 reference on identical
 * synthetic weights: per-token cosine >= 0.999 and relative L2 <= 3e-2 for every output. */
static void published(const char *model, const int32_t *grid, int n) {
  qvl_engine *e[2] = {NULL, NULL};
  qvl_vision_out out[2];
  float *px = NULL;
  for (int i = 0; i < 2; i++) {
    qvl_engine_params p = qvl_engine_default_params();
    p.model_dir = tu_path(model), p.dummy = 1, p.backend = i ? QVL_BACKEND_CUDA : QVL_BACKEND_CPU;
    p.max_patches = 8192;
    if (qvl_engine_open(&e[i], &p)) fail_msg("%s", qvl_errmsg(e[i]));
    const qvl_vision_config *v = &qvl_engine_config(e[i])->vision;
    int64_t rows = 0, k = v->in_channels * v->temporal_patch * v->patch * v->patch;
    for (int j = 0; j < n; j++) rows += (int64_t)grid[3 * j] * grid[3 * j + 1] * grid[3 * j + 2];
    if (!px) {
      px = malloc((size_t)(rows * k) * sizeof(float));
      qvl_counter_fill(px, "pixel_values:published", 0, rows * k, 0.2, 1.8);
    }
    if (qvl_engine_vision(e[i], grid, n, px, &out[i], NULL, NULL)) fail_msg("%s", qvl_errmsg(e[i]));
  }
  /* the same call twice more on the GPU: recorded as a graph, then replayed; the same features, bit for bit */
  for (int rep = 0; rep < 2; rep++) {
    qvl_vision_out again;
    if (qvl_engine_vision(e[1], grid, n, px, &again, NULL, NULL)) fail_msg("%s", qvl_errmsg(e[1]));
    for (int o = 0; o < again.n; o++) {
      double d = tu_max_abs_diff(again.data[o], out[1].data[o], (size_t)(again.rows * again.cols));
      printf("  %-36s output %d: %s vs the first call: max_abs %.3g\n", model, o, rep ? "graph replay" : "recording",
             d);
      if (d != 0) fail_msg("%s output %d: call %d differs from the first by %g", model, o, rep + 2, d);
    }
    qvl_vision_out_free(&again);
  }
  for (int o = 0; o < out[0].n; o++) {
    double rel = tu_rel_l2(out[1].data[o], out[0].data[o], (size_t)(out[0].rows * out[0].cols)), cmin = 1;
    for (int64_t r = 0; r < out[0].rows; r++) {
      const float *a = out[0].data[o] + r * out[0].cols, *b = out[1].data[o] + r * out[0].cols;
      double ab = 0, aa = 0, bb = 0;
      for (int64_t c = 0; c < out[0].cols; c++) ab += (double)a[c] * b[c], aa += (double)a[c] * a[c], bb += (double)b[c] * b[c];
      double cs = ab / sqrt(aa * bb + 1e-30);
      cmin = cs < cmin ? cs : cmin;
    }
    printf("  %-36s output %d: cuda bf16 vs cpu f32 rel_l2 %.2e, min token cosine %.6f\n", model, o, rel, cmin);
    if (!(rel <= 3e-2 && cmin >= 0.999)) fail_msg("%s output %d: rel_l2 %.3e, min cosine %.6f", model, o, rel, cmin);
  }
  for (int i = 0; i < 2; i++) qvl_vision_out_free(&out[i]), qvl_engine_close(e[i]);
  free(px);
}

static void test_published_qwen2_5_vl(void **state) {
  (void)state;
  static const int32_t grid[] = {1, 32, 32, 1, 46, 58};
  published("configs/Qwen2.5-VL-7B-Instruct", grid, 2);
}

static void test_published_qwen3_vl(void **state) {
  (void)state;
  static const int32_t grid[] = {1, 60, 80, 1, 22, 62};
  published("configs/Qwen3-VL-8B-Instruct", grid, 2);
}

/* A plan that cannot fit the device is refused at open, naming the limit; a batch over the limits before any work. */
static void test_limits(void **state) {
  (void)state;
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path("configs/Qwen3-VL-8B-Instruct"), p.dummy = 1, p.backend = QVL_BACKEND_CUDA;
  p.max_patches = 1ll << 36;
  qvl_engine *e = NULL;
  assert_int_equal(qvl_engine_open(&e, &p), QVL_ERR_NOMEM);
  tu_assert_msg_has(qvl_errmsg(e), "workspace for 68719476736 patches", "max_patches");
  printf("  refused at open: %s\n", qvl_errmsg(e));
  qvl_engine_close(e);
  p.max_patches = 4096, p.max_images = 4;
  if (qvl_engine_open(&e, &p)) fail_msg("%s", qvl_errmsg(e));
  static const int32_t grid[] = {1, 64, 80}; /* 5120 patches */
  assert_int_equal(qvl_engine_vision(e, grid, 1, NULL, NULL, NULL, NULL), QVL_ERR_LIMIT); /* no pixels read */
  tu_assert_msg_has(qvl_errmsg(e), "5120 patches", "limit of 4096");
  qvl_engine_close(e);
}

int main(void) {
  if (qvl_cuda_device_count() == 0) {
    printf("test_gpu_vision: no CUDA device here; skipped\n");
    return 0;
  }
  struct CMUnitTest tests[sizeof FIXTURES / sizeof FIXTURES[0] + 3];
  for (size_t i = 0; i < sizeof FIXTURES / sizeof FIXTURES[0]; i++) {
    tests[i] = (struct CMUnitTest)cmocka_unit_test_prestate(test_fixture, (void *)FIXTURES[i]);
    tests[i].name = FIXTURES[i][0];
  }
  size_t n = sizeof FIXTURES / sizeof FIXTURES[0];
  tests[n] = (struct CMUnitTest)cmocka_unit_test(test_published_qwen2_5_vl);
  tests[n + 1] = (struct CMUnitTest)cmocka_unit_test(test_published_qwen3_vl);
  tests[n + 2] = (struct CMUnitTest)cmocka_unit_test(test_limits);
  return _cmocka_run_group_tests("gpu_vision", tests, sizeof tests / sizeof tests[0], NULL, NULL);
}
