/* CPU f32 language models vs transformers fp32 goldens (scripts/make_lm_goldens.py) on the tiny configs:
 * prompt logits relative L2 <= 1e-4; M-RoPE positions and rope_delta identical; the greedy continuation through
 * the KV cache identical token for token (text only, one image between texts, two images of different sizes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "io/safetensors.h"
#include "qvl_internal.h"
#include "testutil.h"

static const char *FIXTURES[][2] = {
  {"qwen2_5_vl_text", "tests/data/tiny-qwen2_5_vl"}, {"qwen2_5_vl_image", "tests/data/tiny-qwen2_5_vl"},
  {"qwen2_5_vl_two_images", "tests/data/tiny-qwen2_5_vl"}, {"qwen3_vl_text", "tests/data/tiny-qwen3_vl"},
  {"qwen3_vl_image", "tests/data/tiny-qwen3_vl"},          {"qwen3_vl_two_images", "tests/data/tiny-qwen3_vl"},
};

static void test_fixture(void **state) {
  const char **f = *state;
  char path[256];
  snprintf(path, sizeof path, "tests/data/goldens/lm_%s.safetensors", f[0]);
  st_model *g = NULL;
  qvl_err err = {0};
  if (st_open(&g, tu_path(path), &err)) fail_msg("%s", err.msg);
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path(f[1]), p.dummy = 1, p.backend = QVL_BACKEND_CPU, p.load = QVL_LOAD_ALL;
  qvl_engine *e = NULL;
  if (qvl_engine_open(&e, &p)) fail_msg("%s", qvl_errmsg(e));
  const qvl_config *c = qvl_engine_config(e);
  int64_t n, n_grid = 0, n_gen, n_pos, n_delta;
  int64_t *ids64 = tu_golden_ints(g, f[0], "input_ids", 0, &n), *gen = tu_golden_ints(g, f[0], "generated", 0, &n_gen);
  int64_t *pos_ref = tu_golden_ints(g, f[0], "position_ids", 0, &n_pos);
  int64_t *delta_ref = tu_golden_ints(g, f[0], "rope_delta", 0, &n_delta);
  int64_t *grid64 = tu_golden_ints(g, f[0], "image_grid_thw", 1, &n_grid);
  int n_img = (int)(n_grid / 3), V = c->text.vocab;
  int32_t grid[24], *ids = malloc((size_t)(n + n_gen) * sizeof(int32_t)), *pos = malloc((size_t)n * 3 * sizeof(int32_t));
  for (int i = 0; i < n_grid; i++) grid[i] = (int32_t)grid64[i];
  for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)ids64[i];
  int64_t rows = 0, k = c->vision.in_channels * c->vision.temporal_patch * c->vision.patch * c->vision.patch;
  for (int i = 0; i < n_img; i++) rows += (int64_t)grid[3 * i] * grid[3 * i + 1] * grid[3 * i + 2];
  char stream[64];
  const char *fx = strstr(f[0], "_vl_") + 4; /* the fixture after the arch: "text", "image", "two_images" */
  snprintf(stream, sizeof stream, "pixel_values:lm:%s", fx);
  float *px = rows ? malloc((size_t)(rows * k) * sizeof(float)) : NULL;
  if (px) qvl_counter_fill(px, stream, 0, rows * k, 0.2, 1.8);
  float *logits = malloc((size_t)n * V * sizeof(float));
  tu_poison(logits, (size_t)n * V);
  int64_t delta = 0;
  if (qvl_engine_prefill(e, ids, (int)n, grid, n_img, px, logits, pos, &delta)) fail_msg("%s", qvl_errmsg(e));
  /* positions and delta exact */
  assert_int_equal(n_pos, 3 * n);
  for (int64_t i = 0; i < 3 * n; i++)
    if (pos[i] != pos_ref[i]) fail_msg("%s: position_ids[%lld][%lld] = %d, golden %lld", f[0], (long long)(i / n),
                                       (long long)(i % n), pos[i], (long long)pos_ref[i]);
  assert_int_equal(delta, delta_ref[0]);
  const st_tensor *lt = st_find(g, "logits");
  float *ref = malloc((size_t)lt->numel * sizeof(float));
  assert_int_equal(st_to_f32(lt, ref, NULL), QVL_OK);
  assert_int_equal(lt->numel, n * V);
  double rel = tu_rel_l2(logits, ref, (size_t)(n * V));
  printf("  %-22s L %3lld  images %d  logits rel_l2 %.2e  positions exact, rope_delta %lld\n", f[0], (long long)n,
         n_img, rel, (long long)delta);
  if (!(rel <= 1e-4)) fail_msg("%s: logits rel_l2 %.3e > 1e-4", f[0], rel);
  /* greedy continuation through the KV cache (prefill, then one decode chunk per token) */
  tu_tokens got = {0};
  qvl_sampling sp = qvl_sampling_default();
  sp.max_tokens = (int)n_gen;
  qvl_pixels img = {n_img, grid, px, NULL};
  if (qvl_generate_ids(e, ids, (int)n, n_img ? &img : NULL, &sp, tu_collect, &got)) fail_msg("%s", qvl_errmsg(e));
  assert_int_equal(got.n, n_gen);
  for (int64_t s = 0; s < n_gen; s++)
    if (got.ids[s] != gen[s]) fail_msg("%s: generated token %lld is %d, transformers chose %lld", f[0], (long long)s,
                                       got.ids[s], (long long)gen[s]);
  printf("  %-22s greedy continuation of %lld tokens identical\n", f[0], (long long)n_gen);
  free(ids64), free(gen), free(pos_ref), free(delta_ref), free(grid64), free(ids), free(pos), free(px), free(logits);
  free(ref);
  qvl_engine_close(e);
  st_close(g);
}

int main(void) {
  struct CMUnitTest tests[sizeof FIXTURES / sizeof FIXTURES[0]];
  for (size_t i = 0; i < sizeof FIXTURES / sizeof FIXTURES[0]; i++) {
    tests[i] = (struct CMUnitTest)cmocka_unit_test_prestate(test_fixture, (void *)FIXTURES[i]);
    tests[i].name = FIXTURES[i][0];
  }
  return _cmocka_run_group_tests("lm_golden", tests, sizeof tests / sizeof tests[0], NULL, NULL);
}
