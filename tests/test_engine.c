/* Engine: parameter counts of the published configs, checkpoint export -> load round trip (sharded),
 * checkpoint errors that name the file and tensor, the vision limits, repeated call shapes, and the NULL-safety
 * of the public API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/safetensors.h"
#include "qvl.h"
#include "qvl_internal.h"
#include "testutil.h"

/* Published sizes (Hugging Face model cards, "Model size"), 3 significant digits. */
static const struct {
  const char *dir;
  double billions;
} PUBLISHED[] = {
  {"configs/Qwen2.5-VL-3B-Instruct", 3.75}, {"configs/Qwen2.5-VL-7B-Instruct", 8.29},
  {"configs/Qwen2.5-VL-72B-Instruct", 73.4}, {"configs/Qwen3-VL-2B-Instruct", 2.13},
  {"configs/Qwen3-VL-4B-Instruct", 4.44},   {"configs/Qwen3-VL-8B-Instruct", 8.77},
  {"configs/Qwen3-VL-32B-Instruct", 33.4},
};

static double round3(double x) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.3g", x);
  return atof(buf);
}

static qvl_engine *open_model(const char *dir, int dummy, qvl_load load, int expect) {
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = dir, p.dummy = dummy, p.load = load, p.backend = QVL_BACKEND_CPU;
  qvl_engine *e = NULL;
  int rc = qvl_engine_open(&e, &p);
  if (rc != expect) fail_msg("open %s: %s (%s), expected %s", dir, qvl_errmsg(e), qvl_status_name(rc),
                             qvl_status_name(expect));
  return e;
}

static void test_param_counts(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof PUBLISHED / sizeof PUBLISHED[0]; i++) {
    qvl_engine *e = open_model(tu_path(PUBLISHED[i].dir), 1, QVL_LOAD_NONE, QVL_OK);
    qvl_model_info in;
    assert_int_equal(qvl_engine_info(e, &in), QVL_OK);
    printf("  %-34s %lld params (%.3g B; vision %lld)\n", PUBLISHED[i].dir, (long long)in.n_params,
           in.n_params / 1e9, (long long)in.n_params_vision);
    if (round3(in.n_params / 1e9) != PUBLISHED[i].billions)
      fail_msg("%s: %.4g B parameters, published %.3g B", PUBLISHED[i].dir, in.n_params / 1e9,
               PUBLISHED[i].billions);
    assert_int_equal(in.n_params, in.n_params_vision + in.n_params_text);
    qvl_engine_close(e);
  }
}

/* Features of a fixed synthetic input, f32 host copy. */
static float *encode(qvl_engine *e, int64_t *n) {
  static const int32_t grid[] = {1, 12, 20, 1, 8, 8};
  int64_t rows = 12 * 20 + 64, k = 3 * 2 * 14 * 14;
  float *px = malloc((size_t)(rows * k) * sizeof(float));
  uint64_t s = tu_seed();
  tu_uniform(px, (size_t)(rows * k), -1.8f, 2.1f, &s);
  qvl_pixels in = {2, grid, px, NULL};
  qvl_features *f = NULL;
  if (qvl_encode_pixels(e, &in, &f)) fail_msg("%s", qvl_errmsg(e));
  int64_t r, c;
  const float *d = qvl_features_data(f, 0, &r, &c);
  assert_int_equal(r, rows / 4);
  *n = r * c;
  float *out = malloc((size_t)*n * sizeof(float));
  memcpy(out, d, (size_t)*n * sizeof(float));
  qvl_features_free(f);
  free(px);
  return out;
}

static void copy_config(const char *from_dir, const char *to_dir) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/'", from_dir, to_dir);
  assert_int_equal(system(cmd), 0);
}

static void test_export_roundtrip_sharded(void **state) {
  (void)state;
  const char *tiny = tu_path("tests/data/tiny-qwen2_5_vl"), *dir = tu_tmpdir();
  qvl_engine *dummy = open_model(tiny, 1, QVL_LOAD_VISION, QVL_OK);
  assert_int_equal(qvl_engine_export(dummy, dir, 200 << 10), QVL_OK); /* ~200 KiB shards: several files */
  char idx[1024];
  snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
  struct stat st;
  assert_int_equal(stat(idx, &st), 0);
  qvl_engine *loaded = open_model(dir, 0, QVL_LOAD_VISION, QVL_OK);
  qvl_model_info a, b;
  qvl_engine_info(dummy, &a), qvl_engine_info(loaded, &b);
  assert_int_equal(a.n_params, b.n_params);
  assert_string_equal(b.weights, "bf16");
  int64_t n1, n2;
  float *f1 = encode(dummy, &n1), *f2 = encode(loaded, &n2);
  assert_int_equal(n1, n2);
  double rel = tu_rel_l2(f2, f1, (size_t)n1);
  printf("  bf16 checkpoint vs f32 synthetic weights: rel_l2 %.2e\n", rel);
  assert_true(rel > 0 && rel < 2e-2); /* bf16 rounding of the weights, nothing more */
  free(f1), free(f2);
  qvl_engine_close(dummy), qvl_engine_close(loaded);
  tu_rmtree(dir);
}

/* Rewrites the tiny model's single-file checkpoint with one tensor dropped or reshaped. */
static const char *mutated_checkpoint(const char *drop, const char *reshape) {
  const char *tiny = tu_path("tests/data/tiny-qwen3_vl"), *src = tu_tmpdir(), *dst = tu_tmpdir();
  qvl_engine *e = open_model(tiny, 1, QVL_LOAD_NONE, QVL_OK);
  assert_int_equal(qvl_engine_export(e, src, 0), QVL_OK);
  qvl_engine_close(e);
  st_model *m = NULL;
  assert_int_equal(st_open(&m, src, NULL), QVL_OK);
  int n = 0;
  st_entry *ents = calloc((size_t)st_count(m), sizeof *ents);
  for (int i = 0; i < st_count(m); i++) {
    const st_tensor *t = st_at(m, i);
    if (drop && !strcmp(t->name, drop)) continue;
    ents[n] = (st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
    memcpy(ents[n].shape, t->shape, sizeof t->shape);
    if (reshape && !strcmp(t->name, reshape)) { /* same bytes, transposed shape */
      ents[n].shape[0] = t->shape[1], ents[n].shape[1] = t->shape[0];
    }
    n++;
  }
  char path[1024];
  snprintf(path, sizeof path, "%s/model.safetensors", dst);
  assert_int_equal(st_write(path, ents, n, NULL, NULL, NULL), QVL_OK);
  copy_config(tiny, dst);
  free(ents);
  st_close(m);
  tu_rmtree(src);
  return dst;
}

static void test_missing_tensor(void **state) {
  (void)state;
  const char *name = "model.visual.blocks.2.attn.qkv.bias", *dir = mutated_checkpoint(name, NULL);
  qvl_engine *e = open_model(dir, 0, QVL_LOAD_VISION, QVL_ERR_MISSING);
  tu_assert_msg_has(qvl_errmsg(e), name, "missing");
  tu_assert_msg_has(qvl_errmsg(e), dir, NULL);
  qvl_engine_close(e);
  tu_rmtree(dir);
}

static void test_wrong_shape(void **state) {
  (void)state;
  const char *name = "model.visual.merger.linear_fc2.weight", *dir = mutated_checkpoint(NULL, name);
  qvl_engine *e = open_model(dir, 0, QVL_LOAD_VISION, QVL_ERR_FORMAT);
  tu_assert_msg_has(qvl_errmsg(e), name, "model.safetensors");
  tu_assert_msg_has(qvl_errmsg(e), "[256, 96]", "[96, 256]");
  qvl_engine_close(e);
  tu_rmtree(dir);
}

static void test_no_checkpoint(void **state) {
  (void)state;
  const char *dir = tu_tmpdir();
  copy_config(tu_path("tests/data/tiny-qwen2_5_vl"), dir);
  qvl_engine *e = open_model(dir, 0, QVL_LOAD_VISION, QVL_ERR_MISSING);
  tu_assert_msg_has(qvl_errmsg(e), dir, NULL);
  qvl_engine_close(e);
  e = open_model("/nonexistent/model", 1, QVL_LOAD_VISION, QVL_ERR_IO);
  tu_assert_msg_has(qvl_errmsg(e), "/nonexistent/model/config.json", NULL);
  qvl_engine_close(e);
  tu_rmtree(dir);
}

static void test_bad_requests(void **state) {
  (void)state;
  qvl_engine *e = open_model(tu_path("tests/data/tiny-qwen2_5_vl"), 1, QVL_LOAD_VISION, QVL_OK);
  float px[4 * 1176] = {0.5f};
  int32_t odd[] = {1, 3, 4}, zero[] = {1, 0, 4};
  qvl_features *f = (qvl_features *)1;
  qvl_pixels in = {1, odd, px, NULL};
  assert_int_equal(qvl_encode_pixels(e, &in, &f), QVL_ERR_INVALID_ARG);
  assert_null(f);
  tu_assert_msg_has(qvl_errmsg(e), "multiples of 2", NULL);
  in.grid_thw = zero;
  assert_int_equal(qvl_encode_pixels(e, &in, &f), QVL_ERR_INVALID_ARG);
  in.n_images = 0;
  assert_int_equal(qvl_encode_pixels(e, &in, &f), QVL_ERR_INVALID_ARG);
  qvl_engine_close(e);
  /* a batch beyond the planned limit is refused before any work */
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path("tests/data/tiny-qwen2_5_vl"), p.dummy = 1, p.backend = QVL_BACKEND_CPU, p.max_patches = 512;
  assert_int_equal(qvl_engine_open(&e, &p), QVL_OK);
  in = (qvl_pixels){1, (const int32_t[]){1, 24, 24}, px, NULL};
  assert_int_equal(qvl_encode_pixels(e, &in, &f), QVL_ERR_LIMIT);
  tu_assert_msg_has(qvl_errmsg(e), "576 patches", "limit of 512");
  qvl_engine_close(e);
  p.max_patches = 4096, p.max_images = 2;
  assert_int_equal(qvl_engine_open(&e, &p), QVL_OK);
  float *px2 = calloc(8 * 1176, sizeof(float)); /* two images of 2 x 2 patches */
  in = (qvl_pixels){3, (const int32_t[]){1, 2, 2, 1, 2, 2, 1, 2, 2}, px2, NULL};
  assert_int_equal(qvl_encode_pixels(e, &in, &f), QVL_ERR_LIMIT);
  tu_assert_msg_has(qvl_errmsg(e), "3 images", "at most 2");
  in.n_images = 2; /* within both limits */
  assert_int_equal(qvl_encode_pixels(e, &in, &f), QVL_OK);
  qvl_features_free(f);
  free(px2);
  qvl_engine_close(e);
  p.max_images = 0; /* a plan needs room for one image */
  assert_int_equal(qvl_engine_open(&e, &p), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_errmsg(e), "max_images", NULL);
  qvl_engine_close(e);
  e = open_model(tu_path("tests/data/tiny-qwen2_5_vl"), 1, QVL_LOAD_NONE, QVL_OK);
  in = (qvl_pixels){1, (const int32_t[]){1, 2, 2}, px, NULL};
  assert_int_equal(qvl_encode_pixels(e, &in, &f), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_errmsg(e), "not loaded", NULL);
  qvl_engine_close(e);
}

/* The same shapes again, with another shape between: the cached index arrays and prepared attention of a shape
 * give the features of a fresh call, on both towers. */
static void test_repeated_shapes(void **state) {
  (void)state;
  const char *models[] = {"tests/data/tiny-qwen2_5_vl", "tests/data/tiny-qwen3_vl"};
  static const int32_t ga[] = {1, 8, 12, 2, 4, 4}, gb[] = {1, 6, 10};
  float *px = malloc((size_t)(128 * 1536) * sizeof(float));
  uint64_t s = tu_seed();
  tu_uniform(px, (size_t)(128 * 1536), -1.8f, 2.1f, &s);
  for (int m = 0; m < 2; m++) {
    qvl_engine *e = open_model(tu_path(models[m]), 1, QVL_LOAD_VISION, QVL_OK);
    qvl_vision_out first, again;
    const int32_t *grids[] = {ga, gb, ga, ga};
    int counts[] = {2, 1, 2, 2};
    for (int i = 0; i < 4; i++) {
      qvl_vision_out *o = i ? &again : &first;
      if (qvl_engine_vision(e, grids[i], counts[i], px, o, NULL, NULL)) fail_msg("%s", qvl_errmsg(e));
      if (i >= 2) {
        assert_int_equal(again.rows, first.rows);
        for (int k = 0; k < first.n; k++)
          assert_true(tu_max_abs_diff(again.data[k], first.data[k], (size_t)(first.rows * first.cols)) == 0);
      }
      if (i) qvl_vision_out_free(&again);
    }
    qvl_vision_out_free(&first);
    qvl_engine_close(e);
  }
  free(px);
}

static void test_null_safety(void **state) {
  (void)state;
  qvl_engine_close(NULL);
  qvl_features_free(NULL);
  assert_non_null(qvl_errmsg(NULL));
  assert_int_equal(qvl_engine_open(NULL, NULL), QVL_ERR_INVALID_ARG);
  qvl_engine *e = NULL;
  assert_int_equal(qvl_engine_open(&e, NULL), QVL_ERR_INVALID_ARG);
  assert_non_null(e);
  tu_assert_msg_has(qvl_errmsg(e), "NULL", NULL);
  qvl_engine_close(e);
  qvl_engine_params p = qvl_engine_default_params();
  assert_int_equal(qvl_engine_open(&e, &p), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_errmsg(e), "model_dir", NULL);
  qvl_engine_close(e);
  assert_int_equal(qvl_features_count(NULL), 0);
  assert_null(qvl_features_data(NULL, 0, NULL, NULL));
  assert_non_null(qvl_status_name(-1000));
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_param_counts),  cmocka_unit_test(test_export_roundtrip_sharded),
    cmocka_unit_test(test_missing_tensor), cmocka_unit_test(test_wrong_shape),
    cmocka_unit_test(test_no_checkpoint), cmocka_unit_test(test_bad_requests),
    cmocka_unit_test(test_repeated_shapes), cmocka_unit_test(test_null_safety),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
