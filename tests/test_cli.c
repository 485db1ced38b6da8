/* The qvl tool end to end: info, encode (synthetic rows and a pixel file), export, and bad invocations
 * that must fail with a message and a nonzero status, never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "io/safetensors.h"
#include "testutil.h"

static void test_info(void **state) {
  (void)state;
  char out[8192];
  assert_int_equal(tu_run_qvl(out, sizeof out, "info --model configs/Qwen3-VL-8B-Instruct --dummy"), 0);
  tu_assert_msg_has(out, "qwen3_vl", "(8.77 B)");
  assert_int_equal(tu_run_qvl(out, sizeof out, "info --model tests/data/tiny-qwen2_5_vl --dummy"), 0);
  tu_assert_msg_has(out, "depth 4, hidden 64", NULL);
}

static void check_features(const char *path, int64_t rows, int n_expected) {
  st_model *m = NULL;
  qvl_err err = {0};
  if (st_open(&m, path, &err)) fail_msg("%s", err.msg);
  const st_tensor *f = st_find(m, "features");
  assert_non_null(f);
  assert_int_equal(f->shape[0], rows);
  assert_int_equal(st_count(m), n_expected);
  assert_non_null(st_find(m, "image_grid_thw"));
  st_close(m);
}

static void test_encode(void **state) {
  (void)state;
  char out[8192], args[2048];
  const char *dir = tu_tmpdir();
  snprintf(args, sizeof args, "encode --model tests/data/tiny-qwen3_vl --dummy --grid 1x34x46 --grid 1x8x8 -o %s/a.st",
           dir);
  assert_int_equal(tu_run_qvl(out, sizeof out, args), 0);
  char path[1024];
  snprintf(path, sizeof path, "%s/a.st", dir);
  check_features(path, (34 * 46 + 64) / 4, 1 + 3 + 1); /* features, 3 DeepStack, grid */
  /* a pixel file as the image processor writes it */
  int64_t rows = 2 * 12 * 16, k = 1176;
  float *px = malloc((size_t)(rows * k) * sizeof(float));
  qvl_counter_fill(px, "pixel_values:cli", 0, rows * k, 0.2, 1.8);
  int64_t grid[3] = {2, 12, 16};
  st_entry e[2] = {{.name = "pixel_values", .dtype = ST_F32, .ndim = 2, .shape = {rows, k}, .data = px},
                   {.name = "image_grid_thw", .dtype = ST_I64, .ndim = 2, .shape = {1, 3}, .data = grid}};
  snprintf(path, sizeof path, "%s/px.st", dir);
  assert_int_equal(st_write(path, e, 2, NULL, NULL, NULL), QVL_OK);
  snprintf(args, sizeof args, "encode --model tests/data/tiny-qwen2_5_vl --dummy --pixels %s -o %s/b.st", path, dir);
  assert_int_equal(tu_run_qvl(out, sizeof out, args), 0);
  snprintf(path, sizeof path, "%s/b.st", dir);
  check_features(path, rows / 4, 2);
  /* the same file against a model with another patch size is refused */
  snprintf(args, sizeof args, "encode --model tests/data/tiny-qwen3_vl --dummy --pixels %s/px.st -o %s/c.st", dir, dir);
  assert_int_equal(tu_run_qvl(out, sizeof out, args), 1);
  tu_assert_msg_has(out, "pixel_values must be [N, 1536]", NULL);
  free(px);
  tu_rmtree(dir);
}

static void test_bad_invocations(void **state) {
  (void)state;
  char out[8192];
  assert_int_equal(tu_run_qvl(out, sizeof out, ""), 2);
  tu_assert_msg_has(out, "usage", NULL);
  assert_int_equal(tu_run_qvl(out, sizeof out, "frobnicate"), 2);
  assert_int_equal(tu_run_qvl(out, sizeof out, "info"), 2);
  tu_assert_msg_has(out, "--model", NULL);
  assert_int_equal(tu_run_qvl(out, sizeof out, "info --model"), 2);
  assert_int_equal(tu_run_qvl(out, sizeof out, "info --model /nonexistent --dummy"), 1);
  tu_assert_msg_has(out, "/nonexistent/config.json", NULL);
  assert_int_equal(tu_run_qvl(out, sizeof out, "encode --model tests/data/tiny-qwen3_vl --dummy --grid 1x3x4 -o /tmp/x.st"), 1);
  tu_assert_msg_has(out, "multiples of 2", NULL);
  assert_int_equal(tu_run_qvl(out, sizeof out, "encode --model tests/data/tiny-qwen3_vl --dummy --grid 1xx4 -o /tmp/x.st"), 2);
  assert_int_equal(tu_run_qvl(out, sizeof out, "encode --model tests/data/tiny-qwen3_vl --dummy -o /tmp/x.st"), 2);
  assert_int_equal(tu_run_qvl(out, sizeof out, "encode --model tests/data/tiny-qwen3_vl --dummy --pixels /nonexistent -o /tmp/x.st"), 1);
  tu_assert_msg_has(out, "/nonexistent", NULL);
}

/* qvl run refuses a prompt the model cannot embed (the real Qwen vocabulary against the tiny model's 1024
 * ids) with a message, before any work. */
static void test_run_refusal(void **state) {
  (void)state;
  char out[8192];
  int rc = tu_run_qvl(out, sizeof out,
               "run --model tests/data/tiny-qwen3_vl --dummy --tokenizer .cache/tokenizer/tokenizer.json --max-tokens 4 "
               "\"Describe this image.\"");
  assert_int_equal(rc, 1);
  tu_assert_msg_has(out, "outside the vocabulary", NULL);
  assert_int_equal(tu_run_qvl(out, sizeof out, "run --model tests/data/tiny-qwen3_vl --dummy"), 2);
  tu_assert_msg_has(out, "needs a prompt", NULL);
}

static void test_export(void **state) {
  (void)state;
  char out[8192], args[1024];
  const char *dir = tu_tmpdir();
  snprintf(args, sizeof args, "export --model tests/data/tiny-qwen3_vl --dummy -o %s/ckpt", dir);
  assert_int_equal(tu_run_qvl(out, sizeof out, args), 0);
  snprintf(args, sizeof args, "info --model %s/ckpt", dir);
  assert_int_equal(tu_run_qvl(out, sizeof out, args), 0);
  tu_assert_msg_has(out, "weights                bf16", NULL);
  tu_rmtree(dir);
}

int main(void) {
  if (!getenv("QVL_BINARY")) {
    fprintf(stderr, "test_cli: QVL_BINARY is not set (run through ctest)\n");
    return 1;
  }
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_info), cmocka_unit_test(test_encode),
                                     cmocka_unit_test(test_bad_invocations), cmocka_unit_test(test_export),
                                     cmocka_unit_test(test_run_refusal)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
