/* The language models on the CUDA backend (bf16) against transformers' fp32 logits on the tiny configs:
 * relative L2 <= 2e-2 (issue 6); the greedy continuation is reported (bf16 may part from fp32 on near ties).
 * Skips, saying why, without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_ops.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "qvl_internal.h"
#include "testutil.h"

static const char *FIXTURES[][2] = {
  {"qwen2_5_vl_text", "tests/data/tiny-qwen2_5_vl"}, {"qwen2_5_vl_two_images", "tests/data/tiny-qwen2_5_vl"},
  {"qwen3_vl_text", "tests/data/tiny-qwen3_vl"},     {"qwen3_vl_two_images", "tests/data/tiny-qwen3_vl"},
};

static void test_fixture(void **state) {
  const char **f = *state;
  char path[256];
  snprintf(path, sizeof path, "tests/data/goldens/lm_%s.safetensors", f[0]);
  st_model *g = NULL;
  qvl_err err = {0};
  if (st_open(&g, tu_path(path), &err)) fail_msg("%s", err.msg);
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path(f[1]), p.dummy = 1, p.backend = QVL_BACKEND_CUDA, p.load = QVL_LOAD_ALL;
  qvl_engine *e = NULL;
  if (qvl_engine_open(&e, &p)) fail_msg("%s", qvl_errmsg(e));
  const qvl_config *c = qvl_engine_config(e);
  int64_t n, n_grid, n_gen;
  int64_t *ids64 = tu_golden_ints(g, f[0], "input_ids", 0, &n), *gen = tu_golden_ints(g, f[0], "generated", 0, &n_gen);
  int64_t *grid64 = tu_golden_ints(g, f[0], "image_grid_thw", 1, &n_grid);
  int32_t ids[128], grid[24];
  for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)ids64[i];
  for (int64_t i = 0; i < n_grid; i++) grid[i] = (int32_t)grid64[i];
  int n_img = (int)(n_grid / 3);
  int64_t rows = 0, k = c->vision.in_channels * c->vision.temporal_patch * c->vision.patch * c->vision.patch;
  for (int i = 0; i < n_img; i++) rows += (int64_t)grid[3 * i] * grid[3 * i + 1] * grid[3 * i + 2];
  char stream[64];
  snprintf(stream, sizeof stream, "pixel_values:lm:%s", strstr(f[0], "_vl_") + 4);
  float *px = rows ? malloc((size_t)(rows * k) * sizeof(float)) : NULL, *logits = malloc((size_t)n * c->text.vocab * 4);
  if (px) qvl_counter_fill(px, stream, 0, rows * k, 0.2, 1.8);
  if (qvl_engine_prefill(e, ids, (int)n, grid, n_img, px, logits, NULL, NULL)) fail_msg("%s", qvl_errmsg(e));
  const st_tensor *lt = st_find(g, "logits");
  float *ref = malloc((size_t)lt->numel * sizeof(float));
  assert_int_equal(st_to_f32(lt, ref, NULL), QVL_OK);
  double rel = tu_rel_l2(logits, ref, (size_t)lt->numel);
  tu_tokens got = {0};
  qvl_sampling s = qvl_sampling_default();
  s.max_tokens = (int)n_gen;
  qvl_pixels img = {n_img, grid, px, NULL};
  if (qvl_generate_ids(e, ids, (int)n, n_img ? &img : NULL, &s, tu_collect, &got)) fail_msg("%s", qvl_errmsg(e));
  int same = 0;
  while (same < got.n && got.ids[same] == gen[same]) same++;
  printf("  %-22s cuda bf16 logits vs transformers fp32: rel_l2 %.2e; greedy agrees for %d of %lld tokens\n", f[0], rel,
         same, (long long)n_gen);
  if (!(rel <= 2e-2)) fail_msg("%s: rel_l2 %.3e > 2e-2", f[0], rel);
  free(ids64), free(grid64), free(gen), free(px), free(logits), free(ref);
  qvl_engine_close(e);
  st_close(g);
}

int main(void) {
  if (qvl_cuda_device_count() == 0) {
    printf("test_gpu_lm: no CUDA device here; skipped\n");
    return 0;
  }
  struct CMUnitTest tests[sizeof FIXTURES / sizeof FIXTURES[0]];
  for (size_t i = 0; i < sizeof FIXTURES / sizeof FIXTURES[0]; i++) {
    tests[i] = (struct CMUnitTest)cmocka_unit_test_prestate(test_fixture, (void *)FIXTURES[i]);
    tests[i].name = FIXTURES[i][0];
  }
  return _cmocka_run_group_tests("gpu_lm", tests, sizeof tests / sizeof tests[0], NULL, NULL);
}
