/* Video M-RoPE positions (spec §4.5) for a (2, 8, 12) video (merged 4 x 6, 24 tokens per temporal group), derived by
 * hand: Qwen3-VL's timestamped frame groups, Qwen2.5-VL's Qwen training-code rule and transformers 5.x's rule. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/mrope.h"
#include "testutil.h"

/* the tiny configs' vision_start, vision_end, image and video ids */
enum { VS = 1010, VE = 1011, IMG = 1012, VID = 1013 };

static qvl_config load(const char *arch) {
  char rel[128];
  snprintf(rel, sizeof rel, "tests/data/tiny-%s/config.json", arch);
  qvl_config c;
  qvl_err err = {0};
  if (qvl_config_load(&c, tu_path(rel), &err)) fail_msg("%s", err.msg);
  assert_int_equal(c.video_token_id, VID);
  assert_int_equal(c.image_token_id, IMG);
  return c;
}

/* Appends a pad run of the merged 4 x 6 grid for each of lt temporal groups to ids and its expected positions:
 * (cur + T[t'], cur + r, cur + c). */
static int pads(int32_t *ids, int32_t (*want)[3], int i, int lt, int32_t cur, const int32_t *T) {
  for (int t = 0; t < lt; t++)
    for (int r = 0; r < 4; r++)
      for (int c = 0; c < 6; c++, i++) {
        ids[i] = VID;
        want[i][0] = cur + T[t], want[i][1] = cur + r, want[i][2] = cur + c;
      }
  return i;
}

static int text(int32_t *ids, int32_t (*want)[3], int i, int32_t id, int32_t p) {
  ids[i] = id;
  want[i][0] = want[i][1] = want[i][2] = p;
  return i + 1;
}

static void check(const qvl_config *c, const int32_t *ids, int32_t (*want)[3], int n, const qvl_rope_videos *v,
                  int64_t want_delta) {
  int32_t pos[3 * 128];
  int64_t delta = 0;
  qvl_err err = {0};
  if (qvl_rope_index(pos, &delta, ids, n, c, NULL, 0, v, &err)) fail_msg("%s", err.msg);
  for (int i = 0; i < n; i++)
    for (int a = 0; a < 3; a++)
      if (pos[a * n + i] != want[i][a]) fail_msg("token %d axis %d: %d, want %d", i, a, pos[a * n + i], want[i][a]);
  assert_int_equal(delta, want_delta);
}

/* Qwen3-VL: "<0.5 seconds>" VS [24 pads] VE "<1.5 seconds>" VS [24 pads] VE B, each group at t = 1. */
static void test_qwen3_video(void **state) {
  (void)state;
  qvl_config c = load("qwen3_vl");
  int32_t ids[128], want[128][3];
  const int32_t T0[1] = {0}, grid[3] = {2, 8, 12};
  int i = text(ids, want, 0, 10, 0);
  i = text(ids, want, i, 20, 1), i = text(ids, want, i, 21, 2), i = text(ids, want, i, VS, 3); /* timestamp text */
  i = pads(ids, want, i, 1, 4, T0);                                                            /* cur 4 -> 4 + 6 */
  i = text(ids, want, i, VE, 10), i = text(ids, want, i, 22, 11), i = text(ids, want, i, 23, 12);
  i = text(ids, want, i, VS, 13);
  i = pads(ids, want, i, 1, 14, T0); /* largest 14 + 5 = 19 */
  i = text(ids, want, i, VE, 20), i = text(ids, want, i, 30, 21);
  assert_int_equal(i, 58);
  qvl_rope_videos v = {grid, NULL, 1, QVL_VIDEO_ROPE_QWEN};
  check(&c, ids, want, i, &v, 22 - 58);
  v.rule = QVL_VIDEO_ROPE_HF5; /* Qwen2.5-VL only: no effect */
  check(&c, ids, want, i, &v, 22 - 58);
  /* one frame group of a two-group video, or no video at all, is refused */
  qvl_err err = {0};
  int32_t pos[3 * 128];
  int64_t d;
  assert_int_equal(qvl_rope_index(pos, &d, ids, 30, &c, NULL, 0, &v, &err), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(err.msg, "part of another", NULL);
  qvl_err_clear(&err);
  assert_int_equal(qvl_rope_index(pos, &d, ids, 58, &c, NULL, 0, NULL, &err), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(err.msg, "video pad run at token 4", NULL);
}

/* Qwen2.5-VL: A B VS [48 pads] VE C D with the video one run (t', r, c). */
static int q25_prompt(int32_t *ids, int32_t (*want)[3], const int32_t *T, int32_t after) {
  int i = text(ids, want, 0, 10, 0);
  i = text(ids, want, i, 11, 1), i = text(ids, want, i, VS, 2);
  i = pads(ids, want, i, 2, 3, T);
  i = text(ids, want, i, VE, after), i = text(ids, want, i, 12, after + 1), i = text(ids, want, i, 13, after + 2);
  assert_int_equal(i, 54);
  return i;
}

static void test_qwen2_5_video(void **state) {
  (void)state;
  qvl_config c = load("qwen2_5_vl");
  int32_t ids[128], want[128][3];
  const int32_t grid[3] = {2, 8, 12};
  /* default 1 s per temporal grid (fps 2): T = (0, 1 * 1.0 * 2) = (0, 2); the run's largest id is 3 + 5 (w), so both
   * rules continue at 9 */
  const int32_t Td[2] = {0, 2};
  int n = q25_prompt(ids, want, Td, 9);
  qvl_rope_videos v = {grid, NULL, 1, QVL_VIDEO_ROPE_QWEN};
  check(&c, ids, want, n, &v, 12 - 54);
  v.rule = QVL_VIDEO_ROPE_HF5;
  check(&c, ids, want, n, &v, 12 - 54);
  /* fps 0.5: 4 s per grid, T = (0, 8). Qwen: next at 1 + (3 + 8) = 12; transformers 5.x: 3 + max(4, 6) = 9 */
  const float four = 4.0f, frac = 0.75f;
  const int32_t T4[2] = {0, 8};
  v.second_per_grid = &four, v.rule = QVL_VIDEO_ROPE_QWEN;
  n = q25_prompt(ids, want, T4, 12);
  check(&c, ids, want, n, &v, 15 - 54);
  v.rule = QVL_VIDEO_ROPE_HF5;
  n = q25_prompt(ids, want, T4, 9);
  check(&c, ids, want, n, &v, 12 - 54); /* the video's t = 11 stays the largest position */
  /* 0.75 s per grid: Qwen T(1) = long(1 * 0.75 * 2) = 1; transformers 5.17 truncates the seconds first:
   * 2 * int(0.75) = 0, so both frames share t (what its get_rope_index did on the GPU machine) */
  const int32_t Tf[2] = {0, 1}, Tz[2] = {0, 0};
  v.second_per_grid = &frac, v.rule = QVL_VIDEO_ROPE_QWEN;
  n = q25_prompt(ids, want, Tf, 9);
  check(&c, ids, want, n, &v, 12 - 54);
  v.rule = QVL_VIDEO_ROPE_HF5;
  n = q25_prompt(ids, want, Tz, 9);
  check(&c, ids, want, n, &v, 12 - 54);
  /* 47 pads for a 48-token video */
  ids[50] = 99;
  qvl_err err = {0};
  int32_t pos[3 * 128];
  int64_t d;
  assert_int_equal(qvl_rope_index(pos, &d, ids, n, &c, NULL, 0, &v, &err), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(err.msg, "video 0 has 47 pad tokens", "needs 48");
}

/* An image then a video (Qwen2.5-VL): each pad kind takes its own grids, in order. */
static void test_image_then_video(void **state) {
  (void)state;
  qvl_config c = load("qwen2_5_vl");
  int32_t ids[128], want[128][3];
  const int32_t img_grid[3] = {1, 4, 2}, vid_grid[3] = {2, 8, 12}, Td[2] = {0, 2};
  int i = text(ids, want, 0, VS, 0);
  for (int r = 0; r < 2; r++) i = text(ids, want, i, IMG, 1), want[i - 1][1] = 1 + r; /* merged 2 x 1 */
  i = text(ids, want, i, VE, 3);                                                     /* 1 + max(2, 1) */
  i = text(ids, want, i, VS, 4);
  i = pads(ids, want, i, 2, 5, Td);
  i = text(ids, want, i, VE, 11); /* 5 + 5 + 1 */
  qvl_rope_videos v = {vid_grid, NULL, 1, QVL_VIDEO_ROPE_QWEN};
  int32_t pos[3 * 128];
  int64_t delta;
  qvl_err err = {0};
  if (qvl_rope_index(pos, &delta, ids, i, &c, img_grid, 1, &v, &err)) fail_msg("%s", err.msg);
  for (int k = 0; k < i; k++)
    for (int a = 0; a < 3; a++) assert_int_equal(pos[a * i + k], want[k][a]);
  assert_int_equal(delta, 12 - i);
}

/* transformers' own get_rope_index on video prompts (scripts/make_lm_goldens.py, rope_<arch>_video): Qwen3-VL
 * exactly; Qwen2.5-VL under QVL_VIDEO_ROPE_HF5, the rule that switch exists for. */
static void test_video_goldens(void **state) {
  (void)state;
  const char *archs[2] = {"qwen2_5_vl", "qwen3_vl"};
  for (int a = 0; a < 2; a++) {
    char rel[128];
    snprintf(rel, sizeof rel, "tests/data/goldens/rope_%s_video.safetensors", archs[a]);
    st_model *g = NULL;
    qvl_err err = {0};
    if (st_open(&g, tu_path(rel), &err)) {
      printf("  skipped %s: %s (scripts/make_lm_goldens.py writes it where torch is)\n", archs[a], err.msg);
      st_close(g);
      continue;
    }
    qvl_config c = load(archs[a]);
    int64_t n, ng, np, nd;
    int64_t *ids64 = tu_golden_ints(g, rel, "input_ids", 0, &n), *grid64 = tu_golden_ints(g, rel, "video_grid_thw", 0, &ng);
    int64_t *ref = tu_golden_ints(g, rel, "position_ids", 0, &np), *dref = tu_golden_ints(g, rel, "rope_delta", 0, &nd);
    int32_t *ids = malloc((size_t)n * sizeof *ids), *pos = malloc((size_t)n * 3 * sizeof *pos), grid[24];
    float spg[8];
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)ids64[i];
    for (int64_t i = 0; i < ng && i < 24; i++) grid[i] = (int32_t)grid64[i];
    const st_tensor *ts = st_find(g, "second_per_grid_ts");
    if (ts) assert_int_equal(st_to_f32(ts, spg, NULL), QVL_OK);
    qvl_rope_videos v = {grid, ts ? spg : NULL, (int)(ng / 3), QVL_VIDEO_ROPE_HF5};
    int64_t delta;
    if (qvl_rope_index(pos, &delta, ids, (int)n, &c, NULL, 0, &v, &err)) fail_msg("%s", err.msg);
    assert_int_equal(np, 3 * n);
    for (int64_t i = 0; i < 3 * n; i++)
      if (pos[i] != ref[i])
        fail_msg("%s: axis %d token %d: %d, transformers %d", archs[a], (int)(i / n), (int)(i % n), pos[i],
                 (int)ref[i]);
    assert_int_equal(delta, dref[0]);
    printf("  %s video: L %d, positions exact, rope_delta %d\n", archs[a], (int)n, (int)delta);
    free(ids64), free(grid64), free(ref), free(dref), free(ids), free(pos);
    st_close(g);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_qwen3_video), cmocka_unit_test(test_qwen2_5_video),
                                     cmocka_unit_test(test_image_then_video), cmocka_unit_test(test_video_goldens)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
