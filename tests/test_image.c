/* The CPU image pipeline after decoding: smart_resize against the reference formula's values (spec §1.2,
 * both variants, the spec's worked examples, half-to-even cases), Pillow's BICUBIC resample on small cases
 * derived by hand from Resample.c's formulas, normalize + patchify order (§1.5-§1.7), the content hash,
 * the public entry point with an engine (threads, errors per image, data: URLs) and `qvl preprocess`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "image/image.h"
#include "img_encode.h"
#include "io/safetensors.h"
#include "testutil.h"

/* ---- smart_resize ---- */

/* Values from transformers' smart_resize and qwen-vl-utils' (Python float64, round-half-even), evaluated
 * with CPython on each row's inputs. Rows: H, W, factor, min, max, {HF h, w}, {qwen-vl-utils h, w};
 * 0 means the call must fail. */
static const struct {
  int h, w, f;
  int64_t lo, hi;
  int hf[2], qvu[2];
} SR[] = {
    {480, 640, 28, 3136, 12845056, {476, 644}, {476, 644}}, /* spec §1.2 worked examples */
    {480, 640, 32, 65536, 16777216, {480, 640}, {480, 640}},
    {42, 280, 28, 3136, 12845056, {56, 280}, {56, 280}},    /* 1.5 -> 2 */
    {70, 280, 28, 3136, 12845056, {56, 280}, {56, 280}},    /* 2.5 -> 2: half to even */
    {98, 280, 28, 3136, 12845056, {112, 280}, {112, 280}},  /* 3.5 -> 4 */
    {42, 28, 28, 3136, 12845056, {84, 56}, {84, 56}},
    {20, 20, 28, 3136, 12845056, {56, 56}, {56, 56}},
    {20, 20, 32, 65536, 16777216, {256, 256}, {256, 256}},
    {3000, 4000, 28, 3136, 12845056, {2996, 4004}, {2996, 4004}},
    {3000, 4000, 32, 65536, 16777216, {3008, 4000}, {3008, 4000}},
    {3000, 4000, 28, 3136, 1003520, {840, 1148}, {840, 1148}},
    {10, 1000, 28, 3136, 12845056, {28, 560}, {28, 1008}},   /* the variants differ on thin images */
    {1, 150, 28, 3136, 12845056, {28, 700}, {28, 140}},
    {150, 1, 32, 65536, 16777216, {3136, 32}, {3136, 32}},
    {1, 200, 28, 3136, 12845056, {28, 812}, {28, 196}},
    {2, 400, 32, 4096, 16777216, {32, 928}, {32, 384}},
    {1080, 1920, 28, 3136, 12845056, {1092, 1932}, {1092, 1932}},
    {1080, 1920, 28, 3136, 1003520, {728, 1316}, {728, 1316}},
    {1080, 1920, 32, 65536, 16777216, {1088, 1920}, {1088, 1920}},
    {4000, 4000, 28, 3136, 12845056, {3584, 3584}, {3584, 3584}},
    {4000, 4000, 32, 65536, 16777216, {4000, 4000}, {4000, 4000}},
    {5000, 5000, 28, 3136, 12845056, {3556, 3556}, {3556, 3556}},
    {123, 457, 28, 3136, 12845056, {112, 448}, {112, 448}},
    {333, 777, 32, 65536, 16777216, {320, 768}, {320, 768}},
    {14, 2800, 28, 3136, 100352, {28, 812}, {28, 2800}},
    {50, 9999, 28, 3136, 12845056, {56, 9996}, {56, 9996}},
    {7, 1400, 28, 3136, 8000, {28, 812}, {0, 0}},            /* qwen-vl-utils floors the height to 0 */
};

static void test_smart_resize_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof SR / sizeof SR[0]; i++)
    for (int utils = 0; utils < 2; utils++) {
      int h, w;
      const int *want = utils ? SR[i].qvu : SR[i].hf;
      qvl_err err = {0};
      int rc = img_smart_resize(&h, &w, SR[i].h, SR[i].w, SR[i].f, SR[i].lo, SR[i].hi, utils, "img", &err);
      if (!want[0]) {
        assert_int_equal(rc, QVL_ERR_LIMIT);
        tu_assert_msg_has(err.msg, "img: 1400x7 resizes to 1260x0, which has no patches", NULL);
        continue;
      }
      if (rc || h != want[0] || w != want[1])
        fail_msg("row %zu (%dx%d, %s): got %dx%d rc %d, want %dx%d", i, SR[i].h, SR[i].w, utils ? "qvu" : "hf", h,
                 w, rc, want[0], want[1]);
    }
}

static void test_aspect_ratio(void **state) {
  (void)state;
  int h, w;
  qvl_err err = {0};
  assert_int_equal(img_smart_resize(&h, &w, 1, 200, 28, 3136, 12845056, 0, "img", &err), QVL_OK);
  assert_int_equal(img_smart_resize(&h, &w, 201, 1, 28, 3136, 12845056, 0, "image 2", &err), QVL_ERR_LIMIT);
  tu_assert_msg_has(err.msg, "image 2: absolute aspect ratio must be smaller than 200, got 201", "(1x201)");
  qvl_err_clear(&err);
  assert_int_equal(img_smart_resize(&h, &w, 1000, 200001, 28, 3136, 12845056, 1, "img", &err), QVL_ERR_LIMIT);
  qvl_err_clear(&err);
  assert_int_equal(img_smart_resize(&h, &w, 0, 10, 28, 3136, 12845056, 0, "img", &err), QVL_ERR_FORMAT);
  tu_assert_msg_has(err.msg, "zero size", NULL);
  qvl_err_clear(&err); /* a caller's huge min_pixels must not overflow the row count */
  assert_int_equal(img_smart_resize(&h, &w, 100, 100, 28, 1LL << 40, 1LL << 41, 0, "img", &err), QVL_ERR_LIMIT);
  tu_assert_msg_has(err.msg, "over 2^31 pixels", NULL);
}

/* ---- Pillow's resample ---- */

/* One row resampled, expectations derived from Resample.c: e.g. 4 -> 2 has scale 2, support 4, window
 * [0, 4) around center 1.0 with Keys weights k(0.25)=0.8671875, k(0.25), k(0.75)=0.2265625,
 * k(1.25)=-0.0703125, normalized by their sum 1.890625 and rounded to 22 bits (1923834, 1923834, 502623,
 * -155987); 2^21 + 100*1923834 + 200*502623 - 250*155987 >> 22 = 61. */
static void check_row(const uint8_t *in, int n_in, const uint8_t *want, int n_out) {
  uint8_t src[3 * 16], dst[3 * 16], src_t[3 * 16], dst_t[3 * 16];
  for (int i = 0; i < n_in; i++) src[3 * i] = in[i], src[3 * i + 1] = (uint8_t)(255 - in[i]), src[3 * i + 2] = 9;
  assert_int_equal(img_resample_bicubic(dst, n_out, 1, src, n_in, 1, NULL), QVL_OK);
  memcpy(src_t, src, sizeof src); /* the same row as a column: the vertical pass alone */
  assert_int_equal(img_resample_bicubic(dst_t, 1, n_out, src_t, 1, n_in, NULL), QVL_OK);
  for (int i = 0; i < n_out; i++) {
    if (dst[3 * i] != want[i]) fail_msg("%d -> %d: output %d is %d, want %d", n_in, n_out, i, dst[3 * i], want[i]);
    assert_int_equal(dst[3 * i + 2], 9); /* a constant stays constant */
    assert_memory_equal(dst_t + 3 * i, dst + 3 * i, 3);
  }
}

static void test_resample_by_hand(void **state) {
  (void)state;
  check_row((const uint8_t[]){0, 100, 200, 250}, 4, (const uint8_t[]){61, 218}, 2);
  check_row((const uint8_t[]){0, 255, 0, 255, 0}, 5, (const uint8_t[]){106, 126, 106}, 3);
  check_row((const uint8_t[]){10, 200}, 2, (const uint8_t[]){0, 22, 105, 188, 219}, 5); /* overshoot clipped */
  check_row((const uint8_t[]){0, 0, 255, 255, 0, 0, 255}, 7, (const uint8_t[]){54, 169, 89}, 3);
  check_row((const uint8_t[]){1, 2, 3}, 3, (const uint8_t[]){1, 2, 3}, 3); /* same size: a copy */
}

/* Two passes with a uint8 image between them: a 2-D resize equals the row pass then the column pass. */
static void test_resample_separable(void **state) {
  (void)state;
  enum { SW = 29, SH = 17, DW = 11, DH = 40 };
  uint8_t src[SW * SH * 3], tmp[DW * SH * 3], want[DW * DH * 3], got[DW * DH * 3];
  enc_synth(src, SW, SH, 3, 5);
  assert_int_equal(img_resample_bicubic(tmp, DW, SH, src, SW, SH, NULL), QVL_OK);
  assert_int_equal(img_resample_bicubic(want, DW, DH, tmp, DW, SH, NULL), QVL_OK);
  assert_int_equal(img_resample_bicubic(got, DW, DH, src, SW, SH, NULL), QVL_OK);
  assert_memory_equal(got, want, sizeof got);
}

/* ---- normalize + patchify ---- */

static void test_norm_lut(void **state) {
  (void)state;
  qvl_preproc_config pc;
  qvl_err err = {0};
  assert_int_equal(qvl_preproc_load(&pc, QVL_ARCH_QWEN3_VL, "/nonexistent", &err), QVL_OK);
  float lut[3][256];
  img_norm_lut(lut, &pc);
  for (int v = 0; v < 256; v++) { /* mean = std = 0.5: (float32(v/255) - 0.5) / 0.5, float32 throughout */
    float x = (float)((double)v * (1.0 / 255.0));
    assert_true(lut[1][v] == (x - 0.5f) / 0.5f);
  }
  assert_true(lut[0][0] == -1.0f && lut[2][255] == 1.0f);
}

/* With rescale and normalize off, each value is its uint8 level, so every element of every row can be
 * traced back: pixel (y, x, c) holds (y * 5 + x * 3 + c * 101) % 251. */
static void test_patchify_order(void **state) {
  (void)state;
  enum { P = 14, M = 2, T = 2, GH = 6, GW = 4, H = GH * P, W = GW * P, K = 3 * T * P * P };
  uint8_t *rgb = malloc(H * W * 3);
  float lut[3][256], *rows = malloc(sizeof(float) * GH * GW * K);
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++)
      for (int c = 0; c < 3; c++) rgb[(y * W + x) * 3 + c] = (uint8_t)((y * 5 + x * 3 + c * 101) % 251);
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 256; v++) lut[c][v] = (float)v;
  tu_poison(rows, GH * GW * K);
  img_patchify(rows, rgb, W, H, (const float(*)[256])lut, P, T, M);
  for (int n = 0; n < GH * GW; n++) /* spec §1.7, read in the other direction: row -> (bh, bw, ih, iw) */
    for (int k = 0; k < K; k++) {
      int iw = n % M, ih = n / M % M, bw = n / (M * M) % (GW / M), bh = n / (M * M * (GW / M));
      int px = k % P, py = k / P % P, c = k / (P * P * T);
      int y = (bh * M + ih) * P + py, x = (bw * M + iw) * P + px;
      float want = (float)((y * 5 + x * 3 + c * 101) % 251);
      if (rows[(size_t)n * K + k] != want) fail_msg("row %d col %d: %g, want %g", n, k, rows[(size_t)n * K + k], want);
    }
  free(rgb), free(rows);
}

/* ---- the pipeline ---- */

static qvl_engine *open_tiny(const char *arch) {
  char dir[64];
  snprintf(dir, sizeof dir, "tests/data/tiny-%s", arch);
  qvl_engine_params p = qvl_engine_default_params();
  p.model_dir = tu_path(dir), p.dummy = 1, p.backend = QVL_BACKEND_CPU;
  qvl_engine *e = NULL;
  if (qvl_engine_open(&e, &p)) fail_msg("open %s: %s", dir, qvl_errmsg(e));
  return e;
}

static uint8_t *jpeg_of(int w, int h, size_t *n) {
  uint8_t *rgb = malloc((size_t)w * h * 3);
  enc_synth(rgb, w, h, 3, (uint32_t)(w * 31 + h));
  uint8_t *j = enc_jpeg(rgb, w, h, TJPF_RGB, TJSAMP_420, 90, 0, n);
  free(rgb);
  return j;
}

/* The spec's 640x480 example through the public API, for both models; the vision tower accepts the rows. */
static void test_pipeline_grids(void **state) {
  (void)state;
  size_t n;
  uint8_t *jpg = jpeg_of(640, 480, &n);
  static const char *arch[] = {"qwen2_5_vl", "qwen3_vl"};
  static const int grid[2][3] = {{1, 34, 46}, {1, 30, 40}}, k[2] = {1176, 1536};
  for (int a = 0; a < 2; a++) {
    qvl_engine *e = open_tiny(arch[a]);
    qvl_image im = {.data = jpg, .size = n};
    qvl_image_batch *b = NULL;
    if (qvl_preprocess_images(e, &im, 1, NULL, &b)) fail_msg("%s", qvl_errmsg(e));
    int64_t len, rows = qvl_image_batch_rows(b, &len);
    const qvl_pixels *px = qvl_image_batch_pixels(b);
    assert_int_equal(px->n_images, 1);
    assert_memory_equal(px->grid_thw, grid[a], sizeof grid[a]);
    assert_int_equal(rows, grid[a][1] * grid[a][2]);
    assert_int_equal(len, k[a]);
    for (int64_t i = 0; i < rows * len; i++) assert_true(fabsf(px->rows[i]) < 3.0f);
    qvl_image_batch_free(b);
    uint8_t rgb[3 * 64 * 64] = {0}; /* the vision tower takes the rows as they are (a small image: CPU time) */
    im = (qvl_image){.rgb = rgb, .width = 64, .height = 64};
    qvl_image_params p = qvl_image_default_params();
    p.min_pixels = 1;
    if (qvl_preprocess_images(e, &im, 1, &p, &b)) fail_msg("%s", qvl_errmsg(e));
    qvl_features *f = NULL;
    if (qvl_encode_pixels(e, qvl_image_batch_pixels(b), &f)) fail_msg("%s", qvl_errmsg(e));
    int64_t fr;
    qvl_features_data(f, 0, &fr, NULL);
    assert_int_equal(fr, qvl_image_batch_rows(b, NULL) / 4);
    qvl_features_free(f);
    qvl_image_batch_free(b);
    qvl_engine_close(e);
  }
  free(jpg);
}

static void to_base64(char *out, const uint8_t *in, size_t n) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < n; i += 3, out += 4) {
    uint32_t w = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
    out[0] = a[w >> 18 & 63], out[1] = a[w >> 12 & 63];
    out[2] = i + 1 < n ? a[w >> 6 & 63] : '=', out[3] = i + 2 < n ? a[w & 63] : '=';
  }
  *out = '\0';
}

/* Three inputs of one picture (PNG bytes, a data: URL of them, decoded RGB) give identical rows and hashes,
 * with one thread or several; another size gives another hash. */
static void test_pipeline_inputs_and_hash(void **state) {
  (void)state;
  enum { W = 300, H = 200 };
  uint8_t *rgb = malloc(W * H * 3);
  enc_synth(rgb, W, H, 3, 77);
  size_t n;
  uint8_t *png = enc_png(rgb, W, H, PNG_COLOR_TYPE_RGB, 8, 0, NULL, 0, NULL, 0, &n);
  char *url = malloc(n * 2 + 64);
  strcpy(url, "data:image/png;base64,");
  to_base64(url + strlen(url), png, n);
  qvl_image im[4] = {{.data = png, .size = n},
                     {.data = url, .size = strlen(url)},
                     {.rgb = rgb, .width = W, .height = H},
                     {.rgb = rgb, .width = W, .height = H / 2}};
  qvl_engine *e = open_tiny("qwen2_5_vl");
  qvl_image_batch *b1 = NULL, *b2 = NULL;
  qvl_image_params p = qvl_image_default_params();
  p.n_threads = 1;
  if (qvl_preprocess_images(e, im, 4, &p, &b1)) fail_msg("%s", qvl_errmsg(e));
  p.n_threads = 3;
  if (qvl_preprocess_images(e, im, 4, &p, &b2)) fail_msg("%s", qvl_errmsg(e));
  int64_t len, rows = qvl_image_batch_rows(b1, &len), per = rows - (int64_t)qvl_image_batch_pixels(b1)->grid_thw[10] *
                                                                       qvl_image_batch_pixels(b1)->grid_thw[11];
  per /= 3;
  const float *r = qvl_image_batch_pixels(b1)->rows;
  assert_memory_equal(r, r + per * len, sizeof(float) * (size_t)(per * len));
  assert_memory_equal(r, r + 2 * per * len, sizeof(float) * (size_t)(per * len));
  assert_memory_equal(r, qvl_image_batch_pixels(b2)->rows, sizeof(float) * (size_t)(rows * len));
  for (int i = 0; i < 3; i++) assert_memory_equal(qvl_image_batch_hash(b1, 0), qvl_image_batch_hash(b1, i), 16);
  assert_memory_equal(qvl_image_batch_hash(b1, 3), qvl_image_batch_hash(b2, 3), 16);
  assert_memory_not_equal(qvl_image_batch_hash(b1, 0), qvl_image_batch_hash(b1, 3), 16);
  assert_null(qvl_image_batch_hash(b1, 4));
  qvl_image_batch_free(b1), qvl_image_batch_free(b2), qvl_engine_close(e);
  free(rgb), free(png), free(url);
}

/* The hash is pinned: it keys caches that outlive a process, so a change must be deliberate. Input: a
 * 56x56 RGB image with pixel (y, x, c) = (y * 56 + x) * 3 + c mod 256, Qwen2.5-VL grid 1x4x4. */
static void test_hash_stable(void **state) {
  (void)state;
  uint8_t rgb[56 * 56 * 3]; /* hashed: "qvl-image-v1", u32 LE t, gh, gw, w, h, then the RGB bytes */
  for (int i = 0; i < 56 * 56 * 3; i++) rgb[i] = (uint8_t)i;
  qvl_engine *e = open_tiny("qwen2_5_vl");
  qvl_image im = {.rgb = rgb, .width = 56, .height = 56};
  qvl_image_batch *b = NULL;
  if (qvl_preprocess_images(e, &im, 1, NULL, &b)) fail_msg("%s", qvl_errmsg(e));
  char hex[33];
  for (int i = 0; i < 16; i++) sprintf(hex + 2 * i, "%02x", qvl_image_batch_hash(b, 0)[i]);
  assert_string_equal(hex, "d9be8c15f1a017caa656596250e51cba"); /* = Python's hashlib.blake2b, digest_size 16 */
  qvl_image_batch_free(b), qvl_engine_close(e);
}

/* The lowest failing image of the first failing phase (headers, then pixels) is named, whatever the threads
 * did, and nothing is returned. */
static void test_pipeline_errors(void **state) {
  (void)state;
  size_t n;
  uint8_t *jpg = jpeg_of(64, 64, &n);
  uint8_t thin[3 * 201];
  memset(thin, 0, sizeof thin);
  qvl_engine *e = open_tiny("qwen3_vl");
  qvl_image_batch *b = (qvl_image_batch *)1;
  qvl_image im[4] = {{.data = jpg, .size = n},
                     {.data = jpg, .size = n * 4 / 5},
                     {.rgb = thin, .width = 201, .height = 1},
                     {.data = "data:image/png;base64,%%%%", .size = 26}};
  assert_int_equal(qvl_preprocess_images(e, im, 4, NULL, &b), QVL_ERR_LIMIT); /* found on the headers */
  assert_null(b);
  tu_assert_msg_has(qvl_errmsg(e), "image 2: absolute aspect ratio", NULL);
  assert_int_equal(qvl_preprocess_images(e, im, 2, NULL, &b), QVL_ERR_FORMAT); /* found decoding */
  tu_assert_msg_has(qvl_errmsg(e), "image 1: corrupt or truncated JPEG", NULL);
  assert_int_equal(qvl_preprocess_images(e, im + 2, 2, NULL, &b), QVL_ERR_LIMIT);
  tu_assert_msg_has(qvl_errmsg(e), "image 0: absolute aspect ratio must be smaller than 200", NULL);
  assert_int_equal(qvl_preprocess_images(e, im + 3, 1, NULL, &b), QVL_ERR_FORMAT);
  tu_assert_msg_has(qvl_errmsg(e), "image 0: invalid base64: character '%' at offset 0", NULL);
  qvl_image_params p = qvl_image_default_params();
  p.max_input_pixels = 64 * 63;
  assert_int_equal(qvl_preprocess_images(e, im, 1, &p, &b), QVL_ERR_LIMIT);
  tu_assert_msg_has(qvl_errmsg(e), "image 0: JPEG image is 64x64 = 4096 pixels, over the limit of 4032", NULL);
  p = qvl_image_default_params();
  p.min_pixels = 5000, p.max_pixels = 4000;
  assert_int_equal(qvl_preprocess_images(e, im, 1, &p, &b), QVL_ERR_INVALID_ARG);
  qvl_image none = {0};
  assert_int_equal(qvl_preprocess_images(e, &none, 1, NULL, &b), QVL_ERR_INVALID_ARG);
  tu_assert_msg_has(qvl_errmsg(e), "image 0: neither data nor rgb is set", NULL);
  qvl_engine_close(e);
  free(jpg);
}

/* Per-call min/max and the qwen-vl-utils semantics change the grid as the reference would. */
static void test_pipeline_options(void **state) {
  (void)state;
  size_t n;
  uint8_t *jpg = jpeg_of(640, 480, &n);
  qvl_engine *e = open_tiny("qwen3_vl");
  qvl_image im = {.data = jpg, .size = n};
  qvl_image_batch *b = NULL;
  qvl_image_params p = qvl_image_default_params();
  p.max_pixels = 100000; /* 480x640 -> beta = sqrt(3.072): 256x352 */
  if (qvl_preprocess_images(e, &im, 1, &p, &b)) fail_msg("%s", qvl_errmsg(e));
  assert_memory_equal(qvl_image_batch_pixels(b)->grid_thw, ((const int32_t[]){1, 16, 22}), 12);
  qvl_image_batch_free(b);
  uint8_t small[3 * 40 * 40] = {0};
  im = (qvl_image){.rgb = small, .width = 40, .height = 40};
  if (qvl_preprocess_images(e, &im, 1, NULL, &b)) fail_msg("%s", qvl_errmsg(e));
  assert_memory_equal(qvl_image_batch_pixels(b)->grid_thw, ((const int32_t[]){1, 16, 16}), 12); /* min 65536 */
  qvl_image_batch_free(b);
  p = qvl_image_default_params();
  p.semantics = QVL_IMAGE_QWEN_VL_UTILS; /* min 4 * 32^2 = 4096: 40x40 grows to 64x64, not 256x256 */
  if (qvl_preprocess_images(e, &im, 1, &p, &b)) fail_msg("%s", qvl_errmsg(e));
  assert_memory_equal(qvl_image_batch_pixels(b)->grid_thw, ((const int32_t[]){1, 4, 4}), 12);
  qvl_image_batch_free(b), qvl_engine_close(e);
  free(jpg);
}

/* The grid from the header alone equals the grid of the full pipeline; errors come from the header stage. */
static void test_grid_from_header(void **state) {
  (void)state;
  size_t n;
  uint8_t *jpg = jpeg_of(640, 480, &n);
  qvl_engine *e = open_tiny("qwen2_5_vl");
  qvl_image im = {.data = jpg, .size = n};
  int32_t g[3];
  assert_int_equal(qvl_image_grid(e, &im, NULL, g), QVL_OK);
  assert_memory_equal(g, ((const int32_t[]){1, 34, 46}), sizeof g);
  for (size_t i = 0; i + 1 < n; i++) /* cut right after the start-of-scan header: no pixel data at all */
    if (jpg[i] == 0xff && jpg[i + 1] == 0xda) im.size = i + 2 + (size_t)(jpg[i + 2] << 8 | jpg[i + 3]), i = n;
  assert_int_equal(qvl_image_grid(e, &im, NULL, g), QVL_OK);
  im.size = 10;
  assert_int_equal(qvl_image_grid(e, &im, NULL, g), QVL_ERR_FORMAT);
  tu_assert_msg_has(qvl_errmsg(e), "image: corrupt or truncated JPEG header", NULL);
  qvl_engine_close(e);
  free(jpg);
}

/* ---- qvl preprocess ---- */

static void test_cli(void **state) {
  (void)state;
  const char *dir = tu_tmpdir();
  char a[600], b[600], out[600], args[4096], log[8192];
  size_t n;
  uint8_t *jpg = jpeg_of(100, 80, &n); /* -> 112x84: a 6x8 grid */
  snprintf(a, sizeof a, "%s/a.jpg", dir), snprintf(b, sizeof b, "%s/b.txt", dir),
      snprintf(out, sizeof out, "%s/px.st", dir);
  tu_write_file(a, jpg, n);
  tu_write_file(b, "not an image", 12);
  snprintf(args, sizeof args, "preprocess --model tests/data/tiny-qwen2_5_vl %s %s -o %s", a, a, out);
  assert_int_equal(tu_run_qvl(log, sizeof log, args), 0);
  tu_assert_msg_has(log, "grid 1x6x8 (12 tokens)", "2 image(s) -> 96 x 1176 pixel rows");
  st_model *m = NULL;
  qvl_err err = {0};
  if (st_open(&m, out, &err)) fail_msg("%s", err.msg);
  assert_int_equal(st_find(m, "pixel_values")->shape[0], 96);
  assert_int_equal(st_find(m, "image_grid_thw")->shape[0], 2);
  assert_int_equal(st_find(m, "image_hash")->shape[1], 16);
  st_close(m);
  snprintf(args, sizeof args, "encode --model tests/data/tiny-qwen2_5_vl --dummy --pixels %s -o %s/f.st", out, dir);
  assert_int_equal(tu_run_qvl(log, sizeof log, args), 0); /* what encode --pixels reads */
  snprintf(args, sizeof args, "preprocess --model tests/data/tiny-qwen2_5_vl %s %s -o %s", a, b, out);
  assert_int_equal(tu_run_qvl(log, sizeof log, args), 1);
  tu_assert_msg_has(log, "image 1: not a JPEG, PNG or WebP image", "QVL_ERR_UNSUPPORTED");
  assert_int_equal(tu_run_qvl(log, sizeof log, "preprocess --model tests/data/tiny-qwen2_5_vl -o x.st"), 2);
  tu_rmtree(dir);
  free(jpg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_smart_resize_table),    cmocka_unit_test(test_aspect_ratio),
      cmocka_unit_test(test_resample_by_hand),      cmocka_unit_test(test_resample_separable),
      cmocka_unit_test(test_norm_lut),              cmocka_unit_test(test_patchify_order),
      cmocka_unit_test(test_pipeline_grids),        cmocka_unit_test(test_pipeline_inputs_and_hash),
      cmocka_unit_test(test_hash_stable),           cmocka_unit_test(test_pipeline_errors),
      cmocka_unit_test(test_pipeline_options),      cmocka_unit_test(test_grid_from_header),
      cmocka_unit_test(test_cli),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
