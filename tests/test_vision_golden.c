/* CPU vision towers vs transformers fp32 goldens (scripts/make_goldens.py) on the tiny configs:
 * float tensors within relative L2 1e-5, every integer tensor exact. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "io/safetensors.h"
#include "models/vision_index.h"
#include "qvl_internal.h"
#include "testutil.h"

#define TOL 1e-5

typedef struct fixture {
  const char *name, *model;
} fixture;

static const fixture FIXTURES[] = {
  {"q25_17x23", "tests/data/tiny-qwen2_5_vl"}, {"q25_8x8", "tests/data/tiny-qwen2_5_vl"},
  {"q25_batch2", "tests/data/tiny-qwen2_5_vl"}, {"q25_video", "tests/data/tiny-qwen2_5_vl"},
  {"q3_17x23", "tests/data/tiny-qwen3_vl"},     {"q3_16x16", "tests/data/tiny-qwen3_vl"},
  {"q3_batch2", "tests/data/tiny-qwen3_vl"},    {"q3_video", "tests/data/tiny-qwen3_vl"},
};

/* Intermediates captured through the tower's tap. */
typedef struct taps {
  qvl_backend *b;
  int last_block;
  float *patch_embed, *pos_embed, *block0, *block_last;
} taps;

static void tap(void *ud, const char *name, const void *buf, int64_t rows, int64_t cols) {
  taps *t = ud;
  float **dst = !strcmp(name, "patch_embed") ? &t->patch_embed : !strcmp(name, "pos_embed") ? &t->pos_embed
                : !strcmp(name, "block.0")   ? &t->block0
                                             : NULL;
  char last[32];
  snprintf(last, sizeof last, "block.%d", t->last_block);
  if (!strcmp(name, last)) dst = &t->block_last;
  if (!dst) return;
  *dst = malloc((size_t)(rows * cols) * sizeof(float));
  tu_poison(*dst, (size_t)(rows * cols));
  assert_int_equal(t->b->download_f32(t->b, *dst, buf, rows * cols), QVL_OK);
}

static const st_tensor *need(const st_model *g, const char *fx, const char *name) {
  const st_tensor *t = st_find(g, name);
  if (!t) fail_msg("%s: golden tensor %s missing", fx, name);
  return t;
}

static void check_f32(const st_model *g, const char *fx, const char *name, const float *got, int64_t n) {
  const st_tensor *t = need(g, fx, name);
  assert_int_equal(t->numel, n);
  float *ref = malloc((size_t)n * sizeof(float));
  assert_int_equal(st_to_f32(t, ref, NULL), QVL_OK);
  double rel = tu_rel_l2(got, ref, (size_t)n);
  printf("  %-10s %-18s rel_l2 %.2e\n", fx, name, rel);
  if (!(rel <= TOL)) fail_msg("%s %s: rel_l2 %.3e > %.0e", fx, name, rel, TOL);
  free(ref);
}

static void check_i32(const st_model *g, const char *fx, const char *name, const int32_t *got, int64_t n) {
  const st_tensor *t = need(g, fx, name);
  if (t->numel != n) fail_msg("%s %s: %lld values, golden has %lld", fx, name, (long long)n, (long long)t->numel);
  int64_t *ref = malloc((size_t)n * sizeof(int64_t));
  assert_int_equal(st_to_i64(t, ref, NULL), QVL_OK);
  for (int64_t i = 0; i < n; i++)
    if (ref[i] != got[i]) fail_msg("%s %s[%lld]: %d, golden %lld", fx, name, (long long)i, got[i], (long long)ref[i]);
  printf("  %-10s %-18s exact (%lld values)\n", fx, name, (long long)n);
  free(ref);
}

static void check_indices(const st_model *g, const char *fx, const qvl_config *c, const int32_t *grid, int n,
                          int64_t rows) {
  int32_t *pos = malloc((size_t)rows * 2 * sizeof(int32_t)), *cu = malloc(((size_t)rows + 1) * sizeof(int32_t));
  vis_rot_pos(pos, grid, n, c->vision.merge);
  check_i32(g, fx, "rot_pos_ids", pos, rows * 2);
  check_i32(g, fx, "cu_seqlens", cu, vis_cu_seqlens(cu, grid, n) + 1);
  if (c->arch == QVL_ARCH_QWEN2_5_VL) {
    int win = c->vision.window_size / c->vision.merge / c->vision.patch;
    int32_t *wi = malloc((size_t)rows / 4 * sizeof(int32_t));
    int32_t *cw = malloc((size_t)(vis_count_windows(grid, n, c->vision.merge, win) + 1) * sizeof(int32_t));
    int nw = vis_window_index(wi, cw, grid, n, c->vision.merge, win);
    check_i32(g, fx, "window_index", wi, rows / 4);
    check_i32(g, fx, "cu_window_seqlens", cw, nw + 1);
    free(wi), free(cw);
  }
  free(pos), free(cu);
}

static void run_fixture(const fixture *f) {
  char path[512];
  snprintf(path, sizeof path, "tests/data/goldens/%s.safetensors", f->name);
  st_model *g = NULL;
  qvl_err err = {0};
  if (st_open(&g, tu_path(path), &err)) fail_msg("%s", err.msg);
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path(f->model), p.dummy = 1, p.backend = QVL_BACKEND_CPU;
  qvl_engine *e = NULL;
  if (qvl_engine_open(&e, &p)) fail_msg("%s", qvl_errmsg(e));
  const qvl_config *c = qvl_engine_config(e);
  /* grids from the golden file */
  const st_tensor *gt = need(g, f->name, "image_grid_thw");
  int n = (int)gt->shape[0];
  int64_t g64[3 * 8], rows = 0;
  assert_true(n <= 8);
  assert_int_equal(st_to_i64(gt, g64, NULL), QVL_OK);
  int32_t grid[3 * 8];
  for (int i = 0; i < 3 * n; i++) grid[i] = (int32_t)g64[i];
  for (int i = 0; i < n; i++) rows += (int64_t)grid[3 * i] * grid[3 * i + 1] * grid[3 * i + 2];
  int k = c->vision.in_channels * c->vision.temporal_patch * c->vision.patch * c->vision.patch;
  /* the pixel rows: the same generator stream transformers was fed */
  char stream[64];
  snprintf(stream, sizeof stream, "pixel_values:%s", f->name);
  float *px = malloc((size_t)(rows * k) * sizeof(float));
  qvl_counter_fill(px, stream, 0, rows * k, 0.2, 1.8);
  const st_tensor *probe = need(g, f->name, "pixel_values_probe");
  float *pr = malloc((size_t)probe->numel * sizeof(float));
  assert_int_equal(st_to_f32(probe, pr, NULL), QVL_OK);
  assert_memory_equal(pr, px, (size_t)probe->numel * sizeof(float));
  free(pr);
  check_indices(g, f->name, c, grid, n, rows);
  taps t = {qvl_engine_backend(e), c->vision.depth - 1, NULL, NULL, NULL, NULL};
  qvl_vision_out out;
  if (qvl_engine_vision(e, grid, n, px, &out, tap, &t)) fail_msg("%s", qvl_errmsg(e));
  int64_t D = c->vision.hidden;
  check_f32(g, f->name, "patch_embed", t.patch_embed, rows * D);
  check_f32(g, f->name, "block0", t.block0, rows * D);
  check_f32(g, f->name, "output", out.data[0], out.rows * out.cols);
  if (c->arch == QVL_ARCH_QWEN2_5_VL) check_f32(g, f->name, "block_last", t.block_last, rows * D);
  if (c->arch == QVL_ARCH_QWEN3_VL) {
    check_f32(g, f->name, "pos_embed", t.pos_embed, rows * D);
    assert_int_equal(out.n, 1 + c->vision.n_deepstack);
    for (int i = 1; i < out.n; i++) {
      char name[32];
      snprintf(name, sizeof name, "deepstack.%d", i - 1);
      check_f32(g, f->name, name, out.data[i], out.rows * out.cols);
    }
  }
  qvl_vision_out_free(&out);
  free(t.patch_embed), free(t.pos_embed), free(t.block0), free(t.block_last), free(px);
  qvl_engine_close(e);
  st_close(g);
}

static void test_fixture(void **state) { run_fixture((const fixture *)*state); }

/* The synthetic weights equal the ones transformers was filled with (by checkpoint name). */
static void check_weights_probe(const char *arch, const char *model) {
  char path[256];
  snprintf(path, sizeof path, "tests/data/goldens/%s_weights_probe.safetensors", arch);
  st_model *g = NULL;
  qvl_err err = {0};
  if (st_open(&g, tu_path(path), &err)) fail_msg("%s", err.msg);
  qvl_config cfg;
  snprintf(path, sizeof path, "%s/config.json", model);
  assert_int_equal(qvl_config_load(&cfg, tu_path(path), &err), QVL_OK);
  qvl_weights w;
  qvl_tensor_spec *specs;
  int n_specs;
  assert_int_equal(qvl_model_specs(&cfg, 1, &w, &specs, &n_specs, &err), QVL_OK);
  assert_true(st_count(g) >= 3);
  for (int i = 0; i < st_count(g); i++) {
    const st_tensor *t = st_at(g, i);
    /* "NAME.firstK" holds the first K values of NAME; a tied lm_head is the embedding */
    char name[160];
    snprintf(name, sizeof name, "%s", t->name);
    char *cut = strstr(name, ".first");
    if (cut) *cut = '\0';
    if (!strcmp(name, "lm_head.weight") && cfg.text.tie_embeddings)
      snprintf(name, sizeof name, "%s", cfg.arch == QVL_ARCH_QWEN3_VL ? "model.language_model.embed_tokens.weight"
                                                                       : "model.embed_tokens.weight");
    const qvl_tensor_spec *s = NULL;
    for (int j = 0; j < n_specs && !s; j++)
      if (!strcmp(specs[j].name, name)) s = &specs[j];
    if (!s) fail_msg("%s: probe tensor %s is not in the qvl name table", arch, t->name);
    assert_true(t->numel <= s->numel);
    float *ref = malloc((size_t)t->numel * sizeof(float)), *got = malloc((size_t)t->numel * sizeof(float));
    double center, scale;
    qvl_dummy_scale(s->name, s->shape, s->ndim, &center, &scale);
    qvl_counter_fill(got, s->name, 0, t->numel, center, scale);
    assert_int_equal(st_to_f32(t, ref, NULL), QVL_OK);
    assert_memory_equal(got, ref, (size_t)t->numel * sizeof(float));
    printf("  %s weights probe %s: %lld values identical\n", arch, t->name, (long long)t->numel);
    free(ref), free(got);
  }
  free(specs);
  qvl_weights_free(&w, NULL);
  st_close(g);
}

static void test_weights_probe(void **state) {
  (void)state;
  check_weights_probe("qwen2_5_vl", "tests/data/tiny-qwen2_5_vl");
  check_weights_probe("qwen3_vl", "tests/data/tiny-qwen3_vl");
}

int main(void) {
  struct CMUnitTest tests[1 + sizeof FIXTURES / sizeof FIXTURES[0]];
  tests[0] = (struct CMUnitTest)cmocka_unit_test(test_weights_probe);
  for (size_t i = 0; i < sizeof FIXTURES / sizeof FIXTURES[0]; i++) {
    tests[i + 1] = (struct CMUnitTest)cmocka_unit_test_prestate(test_fixture, (void *)&FIXTURES[i]);
    tests[i + 1].name = FIXTURES[i].name;
  }
  return _cmocka_run_group_tests("vision_golden", tests, sizeof tests / sizeof tests[0], NULL, NULL);
}
